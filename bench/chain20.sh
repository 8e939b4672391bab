#!/usr/bin/env bash
# Prints issue 13's measured filter chain as bench/run.sh's FILTERS (YAML
# flow items): an RBAC policy of 20 rules (a request matches only the
# last, so every rule is evaluated), the fault filter at 0 % and a local
# rate limit that never limits. The same chain as proxy's
# BenchmarkStreamChain/chain20.
#   FILTERS="$(bench/chain20.sh)" BASE_BIN=... PROXIES="strait strait-base" bench/run.sh http1 7 4
set -euo pipefail
pol=""
for i in $(seq 0 18); do
  pol+="p$i: { permissions: [ { and_rules: { rules: [ { header: { name: x-tenant, string_match: { exact: t$i } } }, { url_path: { path: { prefix: /api/v$i/ } } } ] } } ], principals: [ { remote_ip: { address_prefix: 10.$i.0.0, prefix_len: 16 } } ] }, "
done
pol+="p19: { permissions: [ { any: true } ], principals: [ { direct_remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } } ] }"
printf '%s' "{ name: envoy.filters.http.rbac, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, rules: { action: ALLOW, policies: { $pol } } } }, "
printf '%s' "{ name: envoy.filters.http.fault, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, delay: { fixed_delay: 1s, percentage: { numerator: 0 } }, abort: { http_status: 503, percentage: { numerator: 0 } } } }, "
printf '%s' "{ name: envoy.filters.http.local_ratelimit, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl, token_bucket: { max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s }, filter_enabled: { default_value: { numerator: 100 } }, filter_enforced: { default_value: { numerator: 100 } } } }"
