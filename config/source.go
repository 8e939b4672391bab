package config

import (
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
