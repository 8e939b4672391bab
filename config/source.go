package config

import (
	"maps"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// SourceKey names a config source for grouping subscriptions by the
// stream that serves them: every `ads: {}` source is the one ADS stream;
// api_config_sources are the same stream when they are equal (the
// initial_fetch_timeout of the ConfigSource does not count).
func SourceKey(cs *corev3.ConfigSource) string {
	if cs == nil || cs.GetAds() != nil {
		return "ads"
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(cs.GetApiConfigSource())
	return "api:" + string(b)
}

// Watches is a manager's subscriptions grouped by config source: Set
// tells the watcher, for each source in use, the names it serves, and
// which sources are no longer used.
type Watches struct {
	prev map[string]*corev3.ConfigSource
}

// Set takes the names wanted now, each with its source, and calls watch
// with each source's sorted names and with nil names for each source used
// before and not now. When nothing is wanted and nothing was, and always
// is set, it calls watch(nil, nil) (an ADS subscription with no name
// yet).
func (w *Watches) Set(names map[string]*corev3.ConfigSource, always bool, watch func(src *corev3.ConfigSource, names []string)) {
	groups := map[string][]string{}
	sources := map[string]*corev3.ConfigSource{}
	for n, src := range names {
		k := SourceKey(src)
		groups[k] = append(groups[k], n)
		sources[k] = src
	}
	for k, src := range w.prev {
		if sources[k] == nil {
			watch(src, nil)
		}
	}
	if len(sources) == 0 && len(w.prev) == 0 && always {
		watch(nil, nil)
	}
	for _, k := range slices.Sorted(maps.Keys(sources)) {
		slices.Sort(groups[k])
		watch(sources[k], groups[k])
	}
	w.prev = sources
}
