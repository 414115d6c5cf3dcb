# Restart the app while this node's state is current, holding one of its slots, and report
# how it went.
#
# `stateservice gate` (the guard) exits 0 when the state is current, so Chef runs the resource;
# 1 when it is not, so Chef skips it until a later run; 2 on any error (unreachable, a typo in
# the state: 404, a halted rollout: 409), which skips it too, with the reason on stderr.
# `stateservice run` then waits for one of the state's slots (at most `concurrency` nodes
# restart at once), restarts holding it, and reports success, or failure with the exit code
# (a failure counts against the state's `max_failures`, and at the limit halts the rollout
# for every node). The report is idempotent: a re-run never counts this node twice. The URL
# and the API token reach both commands through STATESERVICE_URL and STATESERVICE_TOKEN, not
# the command line (where `ps` would show the token).
ss = node['stateservice']
env = {
  'PATH' => "#{ss['bin_dir']}:/usr/sbin:/usr/bin:/sbin:/bin",
  'STATESERVICE_URL' => ss['url'],
  'STATESERVICE_TOKEN' => ss['token'],
}

execute 'restart_app_in_its_wave' do
  command "stateservice run #{ss['state']} --chart #{ss['chart']} --host #{node['fqdn']} --wait #{ss['slot_wait']} -- systemctl restart app"
  environment env
  only_if "stateservice gate #{ss['state']} --chart #{ss['chart']} --wait #{ss['wait']}", environment: env
end
