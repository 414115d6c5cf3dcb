# Where the service is and which gate this node waits on: override per role or environment.
default['stateservice']['url'] = 'http://stateservice.example.internal:5000'
default['stateservice']['chart'] = 'rollout'
default['stateservice']['state'] = 'canary'
# Seconds `stateservice gate` waits for the state (the service's long-poll) before this run
# skips the change; 0 asks once and leaves it to the next Chef run.
default['stateservice']['wait'] = 0
# Where the `stateservice` command is (e.g. python3 -m venv /opt/stateservice &&
# /opt/stateservice/bin/pip install stateservice); recipes/curl.rb needs only curl.
default['stateservice']['bin_dir'] = '/opt/stateservice/bin'
# Where recipes/curl.rb writes its curl config files.
default['stateservice']['curl_dir'] = '/etc/stateservice'
