# The same gate with curl alone, for nodes without the stateservice command.
#
# curl --fail exits 0 on 200 (the gate is open) and 22 on 406 (wait), so `only_if` skips the
# change until the chart reaches the state. The PUT carries host=, so a re-run of this recipe
# never counts the node twice. The token goes in a curl config file (`-K`), not on the command
# line, where `ps` would show it.
ss = node['stateservice']
gate = "#{ss['url']}/charts/#{ss['chart']}/state?state=#{ss['state']}"
dir = ss['curl_dir']

directory dir

file "#{dir}/token.curl" do
  content %(header = "Authorization: Bearer #{ss['token']}"\n)
  mode '0600'
  sensitive true
end

execute 'restart_app_on_canary_with_curl' do
  command "systemctl restart app && curl -sS --fail -K #{dir}/token.curl -X PUT '#{gate}&host=#{node['fqdn']}'"
  only_if "curl -sS --fail -K #{dir}/token.curl -o /dev/null '#{gate}'"
end

# The original StateService README kept the requests in curl config files, one to ask and one
# to report; `curl -K FILE` reads them.

file "#{dir}/canChangeMachine.curl" do
  content <<~CURL
    url = "#{gate}"
    header = "Authorization: Bearer #{ss['token']}"
    fail
  CURL
  mode '0600'
  sensitive true
end

file "#{dir}/didChangeMachine.curl" do
  content <<~CURL
    url = "#{gate}&host=#{node['fqdn']}"
    request = "PUT"
    header = "Authorization: Bearer #{ss['token']}"
    fail
  CURL
  mode '0600'
  sensitive true
end

execute 'change_machine' do
  cwd dir
  command './change.sh && curl -sS -K didChangeMachine.curl'
  only_if 'curl -sS -o /dev/null -K canChangeMachine.curl', cwd: dir
end
