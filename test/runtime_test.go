package test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/straitproxy/strait/internal/testutil"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestRuntimeLayers: layered_runtime drives a route's runtime_fraction.
// A static layer sets the first split; an RTDS layer pushed over ADS
// changes it (measured over 1,000 requests each time); the admin layer,
// last, overrides both; a disk layer is read at start and reloaded when
// its symlink is swapped; /runtime shows every layer.
func TestRuntimeLayers(t *testing.T) {
	cp := startControlPlane(t, "")
	a, b := named(t, "a"), named(t, "b")
	laddr := "127.0.0.1:" + freePort(t)
	disk := t.TempDir()
	for _, d := range []string{"v1", "v2"} {
		os.MkdirAll(filepath.Join(disk, d, "app"), 0o755)
	}
	os.WriteFile(filepath.Join(disk, "v1", "app", "color"), []byte("blue\n"), 0o644)
	os.WriteFile(filepath.Join(disk, "v2", "app", "color"), []byte("green\n"), 0o644)
	root := filepath.Join(disk, "current")
	os.Symlink(filepath.Join(disk, "v1"), root)

	route := fromJSON(t, &routev3.RouteConfiguration{}, `{"name":"r","virtual_hosts":[{"name":"all","domains":["*"],"routes":[
	  {"match":{"prefix":"/","runtime_fraction":{"runtime_key":"split.a","default_value":{"numerator":50}}},"route":{"cluster":"ca"}},
	  {"match":{"prefix":"/"},"route":{"cluster":"cb"}}]}]}`)
	rtds := func(v string, share float64) {
		layer, _ := structpb.NewStruct(map[string]any{"split": map[string]any{"a": share}})
		cp.set(v, map[resource.Type][]types.Resource{
			resource.ListenerType: {testutil.XDSListener("ingress", laddr, "r", "")},
			resource.RouteType:    {route},
			resource.ClusterType:  {testutil.XDSCluster("ca"), testutil.XDSCluster("cb")},
			resource.EndpointType: {testutil.XDSEndpoints("ca", a), testutil.XDSEndpoints("cb", b)},
			resource.RuntimeType:  {&runtimev3.Runtime{Name: "rt0", Layer: layer}},
		})
	}
	rtds("1", 20)
	boot := xdsBootstrap(cp.addr, false) + `
layered_runtime:
  layers:
  - name: base
    static_layer: { split: { a: 100 } }
  - name: disk
    disk_layer: { symlink_root: ` + root + ` }
  - name: pushed
    rtds_layer: { name: rt0, rtds_config: { ads: {}, resource_api_version: V3 } }
  - name: admin
    admin_layer: {}
`
	p := startProxy(t, boot)
	url := "http://" + laddr + "/"
	share := func() int {
		c := &http.Client{Timeout: 2 * time.Second}
		n := 0
		for range 1000 {
			if code, got := body(c, url); code == 200 && got == "a" {
				n++
			} else if code != 200 {
				t.Fatalf("%d %q", code, got)
			}
		}
		return n
	}
	waitBody(t, url, "b", 10*time.Second) // up, and the split is in force
	testutil.Eventually(t, 5*time.Second, "the RTDS layer", func() bool {
		v, ok := p.srv.Runtime().Snapshot().Get("split.a")
		return ok && v.Num == 20
	})
	if n := share(); n < 130 || n > 270 {
		t.Fatalf("RTDS split.a 20: %d of 1000 to a", n)
	}
	rtds("2", 80)
	testutil.Eventually(t, 5*time.Second, "the new RTDS value", func() bool {
		v, _ := p.srv.Runtime().Snapshot().Get("split.a")
		return v.Num == 80
	})
	if n := share(); n < 730 || n > 870 {
		t.Fatalf("RTDS split.a 80: %d of 1000 to a", n)
	}
	resp, err := http.Post(p.admin()+"/runtime_modify?split.a=0", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("runtime_modify: %v %v", resp, err)
	}
	if n := share(); n != 0 {
		t.Fatalf("admin split.a 0: %d of 1000 to a", n)
	}

	// The disk layer, then its symlink swapped.
	if v, _ := p.srv.Runtime().Snapshot().Get("app.color"); v.Raw != "blue" {
		t.Fatalf("disk app.color %q", v.Raw)
	}
	os.Symlink(filepath.Join(disk, "v2"), root+".new")
	os.Rename(root+".new", root)
	testutil.Eventually(t, 5*time.Second, "the disk layer reloaded", func() bool {
		v, _ := p.srv.Runtime().Snapshot().Get("app.color")
		return v.Raw == "green"
	})

	_, js := get(t, p.admin()+"/runtime")
	var page struct {
		Layers  []string
		Entries map[string]struct {
			LayerValues []string `json:"layer_values"`
			FinalValue  string   `json:"final_value"`
		}
	}
	if err := json.Unmarshal([]byte(js), &page); err != nil {
		t.Fatal(err)
	}
	if strings.Join(page.Layers, ",") != "base,disk,pushed,admin" {
		t.Fatalf("layers %v", page.Layers)
	}
	e := page.Entries["split.a"]
	if e.FinalValue != "0" || strings.Join(e.LayerValues, ",") != "100,,80,0" {
		t.Fatalf("split.a on /runtime: %+v", e)
	}
}

// TestRuntimeErrors: a layered_runtime Strait cannot serve names the
// field.
func TestRuntimeErrors(t *testing.T) {
	base := xdsBootstrap("127.0.0.1:1", false)
	for _, tc := range []struct{ name, rt, want string }{
		{"two admin layers", "[{name: a, admin_layer: {}}, {name: b, admin_layer: {}}]", "layered_runtime.layers[1].admin_layer: only one admin layer"},
		{"duplicate name", "[{name: a, admin_layer: {}}, {name: a, static_layer: {}}]", `layered_runtime.layers[1].name: duplicate layer name "a"`},
		{"bad fraction", "[{name: a, static_layer: {x: {numerator: 1, denominator: HALF}}}]", "layered_runtime.layers[0].static_layer.x: denominator"},
		{"rtds without ads", "[{name: a, rtds_layer: {name: r, rtds_config: {path_config_source: {path: /x}}}}]", "layered_runtime.layers[0].rtds_layer.rtds_config.path_config_source: not supported yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := buildServer(base + "layered_runtime: { layers: " + tc.rt + " }\n")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
