package localratelimit

import (
	"strings"
	"testing"

	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	"github.com/straitproxy/strait/filter"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

func TestConfig(t *testing.T) {
	for _, c := range []struct{ cfg, err string }{
		{`{stat_prefix: l, token_bucket: {max_tokens: 5, fill_interval: 1s}}`, ""},
		{`{stat_prefix: l, token_bucket: {max_tokens: 5, tokens_per_fill: 2, fill_interval: 0.05s}, share_key: k, runtime_enabled: {default_value: false, runtime_key: x}}`, ""},
		{`{token_bucket: {max_tokens: 5, fill_interval: 1s}}`, "StatPrefix: value length must be at least 1"},
		{`{stat_prefix: l}`, "TokenBucket: value is required"},
		{`{stat_prefix: l, token_bucket: {max_tokens: 5, fill_interval: 0.01s}}`, "token_bucket.fill_interval: at least 50ms"},
		{`{stat_prefix: l, token_bucket: {max_tokens: 5, fill_interval: 1s}, runtime_enabled: {runtime_key: x}}`, "DefaultValue: value is required"},
	} {
		j, err := yaml.YAMLToJSON([]byte(c.cfg))
		if err != nil {
			t.Fatal(err)
		}
		m := &lrlv3.LocalRateLimit{}
		if err := protojson.Unmarshal(j, m); err != nil {
			t.Fatal(err)
		}
		if err = m.Validate(); err == nil {
			_, err = build(&filter.BuildContext{Stats: stats.NewStore().Root()}, m)
		}
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.cfg, err)
		case c.err != "" && (err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.err))):
			t.Errorf("%s: error %v, want %q", c.cfg, err, c.err)
		}
	}
}
