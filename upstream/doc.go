// Package upstream holds the clusters: their hosts (static or resolved by
// DNS), a load balancer each, circuit-breaker counters, and a connection
// pool per host. The manager is rebuilt as a whole on a config change;
// a cluster that is unchanged keeps its pools.
//
// Load balancers are extensions in upstream/lb/NAME, registered by name
// from their init(); this package finds them through the registry.
// upstream imports config, network, stats and internal only.
package upstream
