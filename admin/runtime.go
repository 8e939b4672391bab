package admin

import (
	"encoding/json"
	"net/http"

	"github.com/straitproxy/strait/config"
)

// runtimeSource is what the runtime pages read (the server has it).
type runtimeSource interface{ Runtime() *config.Runtime }

// runtimePage is Envoy's /runtime: the layers in order and, per key, its
// value in each layer and the final value.
func (s *Server) runtimePage(w http.ResponseWriter, _ *http.Request) {
	rs, ok := s.src.(runtimeSource)
	if !ok || rs.Runtime() == nil {
		http.Error(w, "no runtime", http.StatusNotFound)
		return
	}
	snap := rs.Runtime().Snapshot()
	type entry struct {
		LayerValues []string `json:"layer_values"`
		FinalValue  string   `json:"final_value"`
	}
	out := struct {
		Layers  []string         `json:"layers"`
		Entries map[string]entry `json:"entries"`
	}{Layers: []string{}, Entries: map[string]entry{}}
	layers := snap.Layers()
	for _, l := range layers {
		out.Layers = append(out.Layers, l.Name)
	}
	for _, k := range snap.Keys() {
		e := entry{LayerValues: make([]string, len(layers))}
		for i, l := range layers {
			if v, ok := l.Entries[k]; ok {
				e.LayerValues[i] = v.Raw
			}
		}
		v, _ := snap.Get(k)
		e.FinalValue = v.Raw
		out.Entries[k] = e
	}
	w.Header().Set("content-type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

// runtimeModify is Envoy's POST /runtime_modify?key=value&...: it sets
// (an empty value removes) keys of the admin layer.
func (s *Server) runtimeModify(w http.ResponseWriter, r *http.Request) {
	rs, ok := s.src.(runtimeSource)
	if !ok || rs.Runtime() == nil {
		http.Error(w, "no runtime", http.StatusNotFound)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	values := map[string]string{}
	for k, v := range r.Form {
		values[k] = v[len(v)-1]
	}
	if len(values) == 0 {
		http.Error(w, "usage: /runtime_modify?key1=value1&key2=value2", http.StatusBadRequest)
		return
	}
	if !rs.Runtime().Modify(values) {
		http.Error(w, "no admin layer specified", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("content-type", "text/plain")
	w.Write([]byte("OK\n"))
}
