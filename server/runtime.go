package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/xds"
)

// diskPoll is how often a disk layer's symlink_root is checked for a new
// target (Envoy reloads when the symlink is swapped).
const diskPoll = time.Second

// runtimeLayers holds what the process does for layered_runtime beyond
// the values: disk layers to reload, RTDS layers to subscribe to.
type runtimeLayers struct {
	disk []diskLayer
	rtds map[string]rtdsLayer // by resource name (rtds_layer.name)
	stop chan struct{}
}

// rtdsLayer is the layer an RTDS resource fills, and where it comes from.
type rtdsLayer struct {
	layer  string
	source *corev3.ConfigSource
}

type diskLayer struct {
	name, dir, root string
	seen            string // the symlink target (or modification time) last read
}

// buildRuntime makes the runtime from layered_runtime, checking every
// layer (the error names its path). Static and disk layers are read now;
// admin layers start empty; RTDS layers fill when their resource comes.
func buildRuntime(b *bootstrapv3.Bootstrap, serviceCluster string) (*config.Runtime, *runtimeLayers, error) {
	rt := config.NewRuntime()
	rl := &runtimeLayers{rtds: map[string]rtdsLayer{}, stop: make(chan struct{})}
	names := map[string]bool{}
	admin := false
	for i, l := range b.GetLayeredRuntime().GetLayers() {
		path := fmt.Sprintf("layered_runtime.layers[%d]", i)
		if names[l.GetName()] {
			return nil, nil, config.At(path+".name", fmt.Errorf("duplicate layer name %q", l.GetName()))
		}
		names[l.GetName()] = true
		switch {
		case l.GetStaticLayer() != nil:
			e, err := config.RuntimeEntries(l.GetStaticLayer())
			if err != nil {
				return nil, nil, config.At(path+".static_layer", err)
			}
			rt.AddLayer(l.GetName(), "static", e)
		case l.GetDiskLayer() != nil:
			dl := l.GetDiskLayer()
			dir := filepath.Join(dl.GetSymlinkRoot(), dl.GetSubdirectory())
			if dl.GetAppendServiceCluster() {
				dir = filepath.Join(dir, serviceCluster)
			}
			e, err := config.DiskEntries(dir)
			if err != nil {
				return nil, nil, config.At(path+".disk_layer", err)
			}
			rt.AddLayer(l.GetName(), "disk", e)
			rl.disk = append(rl.disk, diskLayer{name: l.GetName(), dir: dir, root: dl.GetSymlinkRoot(), seen: linkState(dl.GetSymlinkRoot())})
		case l.GetAdminLayer() != nil:
			if admin {
				return nil, nil, config.At(path+".admin_layer", errors.New("only one admin layer is allowed"))
			}
			admin = true
			rt.AddLayer(l.GetName(), "admin", nil)
		case l.GetRtdsLayer() != nil:
			r := l.GetRtdsLayer()
			if err := checkSource(b, r.GetRtdsConfig()); err != nil {
				return nil, nil, config.At(path+".rtds_layer.rtds_config", err)
			}
			if _, dup := rl.rtds[r.GetName()]; dup {
				return nil, nil, config.At(path+".rtds_layer.name", fmt.Errorf("another layer takes runtime %q", r.GetName()))
			}
			rt.AddLayer(l.GetName(), "rtds", nil)
			rl.rtds[r.GetName()] = rtdsLayer{layer: l.GetName(), source: r.GetRtdsConfig()}
		default:
			return nil, nil, config.At(path, errors.New("a layer needs static_layer, disk_layer, admin_layer or rtds_layer"))
		}
	}
	return rt, rl, nil
}

// linkState is what tells a disk layer changed: the symlink's target, or
// for a plain directory its modification time.
func linkState(root string) string {
	if t, err := os.Readlink(root); err == nil {
		return "link:" + t
	}
	if fi, err := os.Stat(root); err == nil {
		return "mtime:" + fi.ModTime().String()
	}
	return ""
}

// watchDisk reloads a disk layer when its symlink_root points somewhere
// new (the way runtime directories are swapped atomically), until stop.
func (s *Server) watchDisk(rl *runtimeLayers) {
	if len(rl.disk) == 0 {
		return
	}
	t := time.NewTicker(diskPoll)
	defer t.Stop()
	for {
		select {
		case <-rl.stop:
			return
		case <-t.C:
		}
		for i := range rl.disk {
			d := &rl.disk[i]
			st := linkState(d.root)
			if st == d.seen {
				continue
			}
			e, err := config.DiskEntries(d.dir)
			if err != nil {
				s.log.Warn("runtime disk layer not reloaded", "layer", d.name, "err", err)
				continue
			}
			d.seen = st
			s.runtime.SetLayer(d.name, e)
			s.log.Info("runtime disk layer reloaded", "layer", d.name, "keys", len(e))
		}
	}
}

// applyRTDS sets each RTDS layer from its Runtime resource (a layer whose
// resource is gone is empty); a resource whose layer does not parse is
// refused by name and its layer keeps its values.
func (d *dynamic) applyRTDS(set map[string]*xds.Resource) map[string]error {
	refused := map[string]error{}
	for name, l := range d.s.rtLayers.rtds {
		r := set[name]
		if r == nil {
			d.s.runtime.SetLayer(l.layer, nil)
			continue
		}
		e, err := config.RuntimeEntries(r.Message.(*runtimev3.Runtime).GetLayer())
		if err != nil {
			refused[name] = fmt.Errorf("runtime %q: layer: %w", name, err)
			continue
		}
		d.s.runtime.SetLayer(l.layer, e)
		d.s.log.Debug("runtime layer updated", "runtime", name, "keys", len(e))
	}
	for name := range set {
		if _, ok := d.s.rtLayers.rtds[name]; !ok {
			refused[name] = fmt.Errorf("runtime %q: no rtds_layer asks for it", name)
		}
	}
	return refused
}
