package config

import (
	"strings"
	"testing"

	// Linked in so that their type URLs resolve, as in the binary.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

func TestParseErrorsNamePaths(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"ok", "static_resources: { clusters: [ { name: a } ] }", ""},
		{"unknown top-level field", "statik_resources: {}", `statik_resources: unknown field "statik_resources"`},
		{"unknown nested field", "static_resources: { clusters: [ { name: a }, { nme: b } ] }", `static_resources.clusters[1].nme: unknown field "nme"`},
		{"wrong type", "static_resources: { clusters: [ { name: 5 } ] }", "static_resources.clusters[0].name"},
		{"unknown type url", `static_resources: { listeners: [ { filter_chains: [ { filters: [ { name: x, typed_config: { "@type": type.googleapis.com/no.such.Type } } ] } ] } ] }`,
			`static_resources.listeners[0].filter_chains[0].filters[0].typed_config: unsupported type URL "type.googleapis.com/no.such.Type"`},
		{"not yaml", "a: [", "yaml:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), true)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateNamesEveryViolation(t *testing.T) {
	b, err := Parse([]byte(`static_resources:
  clusters:
  - { name: a, connect_timeout: -1s }
  - { name: "" }`), true)
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(b)
	for _, want := range []string{
		"static_resources.clusters[0].connect_timeout: value must be greater than 0s",
		"static_resources.clusters[1].name: value length must be at least 1 runes",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestOverlayMergesOverFile(t *testing.T) {
	b, err := LoadFile("", "node: { id: from-flag }\nstatic_resources: { clusters: [ { name: a } ] }")
	if err != nil {
		t.Fatal(err)
	}
	if b.GetNode().GetId() != "from-flag" || len(b.GetStaticResources().GetClusters()) != 1 {
		t.Fatalf("overlay not applied: %v", b)
	}
	if _, err := LoadFile("", ""); err == nil {
		t.Fatal("no config accepted")
	}
}

func TestRegistryPanicsOnDuplicates(t *testing.T) {
	Register(Extension{Kind: "test kind", Name: "x", TypeURL: "u"})
	for _, e := range []Extension{{Kind: "test kind", Name: "x", TypeURL: "v"}, {Kind: "test kind", Name: "y", TypeURL: "u"}, {Kind: "test kind"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%+v) did not panic", e)
				}
			}()
			Register(e)
		}()
	}
	if _, err := Lookup("test kind", "nope"); err == nil || !strings.Contains(err.Error(), `(supported: u)`) {
		t.Fatalf("Lookup error %v", err)
	}
}
