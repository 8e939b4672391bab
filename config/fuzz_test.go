package config

import "testing"

// FuzzParseBootstrap loads arbitrary bootstrap files, YAML and JSON: a
// bad one is an error that names its field, never a panic (issue 11,
// item 15).
func FuzzParseBootstrap(f *testing.F) {
	f.Add([]byte("static_resources:\n  clusters:\n  - name: c\n    connect_timeout: 1s\n    load_assignment: { cluster_name: c, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 80 } } } } ] } ] }\n"), true)
	f.Add([]byte(`{"admin":{"address":{"socket_address":{"address":"127.0.0.1","port_value":9901}}},"static_resources":{"listeners":[{"name":"l","filter_chains":[{"filters":[{"name":"x","typed_config":{"@type":"type.googleapis.com/nope"}}]}]}]}}`), false)
	f.Add([]byte("node: { id: [1, 2] }\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, yaml bool) {
		b, err := Parse(data, yaml)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		Validate(b)
	})
}
