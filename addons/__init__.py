"""cliproxy's mitmproxy addons, in the order a request meets them.

- `gate`: open routes, proxy key check, client credentials removed
- `management` (mgmt/): `/v0/management/*` served locally
- `route`: model → provider → account; destination and credentials
- `failover` + `streamretry`: retries before the first byte, live streaming after it
- `tap`: one record per request for usage statistics, logs and metrics

`cliproxy.py` is the script for `mitmdump -s`/`mitmweb -s`; `chain.py` builds the list.
"""
