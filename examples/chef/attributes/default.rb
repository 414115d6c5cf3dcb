# Where the service is and which gate this node waits on: override per role or environment.
default['stateservice']['url'] = 'http://stateservice.example.internal:5000'
default['stateservice']['chart'] = 'rollout'
default['stateservice']['state'] = 'canary'
# Seconds `stateservice gate` waits for the state (the service's long-poll) before this run
# skips the change; 0 asks once and leaves it to the next Chef run.
default['stateservice']['wait'] = 0
# Seconds `stateservice run` waits for a free slot once the state is current.
default['stateservice']['slot_wait'] = 1800
# An API token with the read and report scopes (`stateservice token create NAME --scope read
# --scope report`); keep it in an encrypted data bag or a vault and set it from there.
default['stateservice']['token'] = ''
# Where the `stateservice` command is (e.g. python3 -m venv /opt/stateservice &&
# /opt/stateservice/bin/pip install stateservice); recipes/curl.rb needs only curl.
default['stateservice']['bin_dir'] = '/opt/stateservice/bin'
# Where recipes/curl.rb writes its curl config files.
default['stateservice']['curl_dir'] = '/etc/stateservice'
