# Restart the app only while this node's gate is open, then report the node done.
#
# `stateservice gate` exits 0 when the state is current, so Chef runs the resource; 1 when it
# is not, so Chef skips it until a later run; 2 on any error (unreachable, a typo in the state:
# 404), which skips it too, with the reason on stderr. `stateservice report --host` is
# idempotent: a re-run never counts this node twice. The URL reaches both commands through
# STATESERVICE_URL (and an API token would through STATESERVICE_TOKEN), not the command line.
ss = node['stateservice']
env = {
  'PATH' => "#{ss['bin_dir']}:/usr/sbin:/usr/bin:/sbin:/bin",
  'STATESERVICE_URL' => ss['url'],
}

execute 'restart_app_on_canary' do
  command "systemctl restart app && stateservice report #{ss['state']} --chart #{ss['chart']} --host #{node['fqdn']}"
  environment env
  only_if "stateservice gate #{ss['state']} --chart #{ss['chart']} --wait #{ss['wait']}", environment: env
end
