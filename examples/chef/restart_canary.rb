# Chef: restart this host only while the chart's gate is open, then report it done.
#
# `only_if` runs curl; curl --fail exits 0 on 200 (gate open) and 22 on 406 (wait), so
# Chef skips the step until the chart reaches `canary`. The PUT carries host= so that a
# re-run of this recipe never counts the host twice.
gate = 'http://stateservice.example.internal:5000/state?chart=rollout&state=canary'
host = node['fqdn']

execute 'restart_app_on_canary' do
  command "systemctl restart app && curl -sS --fail -X PUT '#{gate}&host=#{host}'"
  only_if "curl -sS --fail -o /dev/null '#{gate}'"
end

# The original README kept the URLs in curl config files; that works unchanged:
#   canChangeMachine.curl:  url = "http://stateservice.example.internal:5000/state?state=canary"
#                           fail
#   didChangeMachine.curl:  url = "http://stateservice.example.internal:5000/state?state=canary&host=HOST"
#                           request = "PUT"
#                           fail
execute 'change_machine' do
  cwd '/etc/stateservice'
  command './change.sh && curl -sS -K didChangeMachine.curl'
  only_if 'curl -sS -o /dev/null -K canChangeMachine.curl', cwd: '/etc/stateservice'
end
