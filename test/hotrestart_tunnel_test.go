package test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/testutil"
	"golang.org/x/net/websocket"
)

// wsRestartBootstrap is a bootstrap whose ingress listener is on a fixed
// port (its address is returned), with WebSocket upgrades under /ws to
// the cluster ws (an echo server) and the rest to backend: what hot
// restart tests carry across epochs.
func wsRestartBootstrap(t *testing.T) (yaml, addr string) {
	up := testutil.StartUpstream(t)
	addr = closedPort(t)
	_, port, _ := strings.Cut(addr, "127.0.0.1:")
	rc := routeCfg{hcmOpts: "          upgrade_configs: [ { upgrade_type: websocket } ]",
		routes: `              - match: { prefix: "/ws" }
                route: { cluster: ws }
              - match: { prefix: "/" }
                route: { cluster: backend }`}
	yaml = strings.Replace(httpBootstrap(up.Addr, rc, ""), "port_value: 0 } }\n    filter_chains", "port_value: "+port+" } }\n    filter_chains", 1)
	wh, wp, _ := net.SplitHostPort(startWSEcho(t))
	yaml = strings.Replace(yaml, "  clusters:\n", fmt.Sprintf(`  clusters:
  - name: ws
    connect_timeout: 1s
    load_assignment:
      cluster_name: ws
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: %s, port_value: %s } } }
`, wh, wp), 1)
	return yaml, addr
}

// TestHotRestartTunnelRefused: an epoch cannot serve the WebSocket
// tunnels (its config has no cluster of their name), so it refuses them
// and the old process takes them back (the migration's Abort): each
// session goes on there, in both directions, with no message lost, until
// the session ends; the requests of the listener go to the new epoch.
func TestHotRestartTunnelRefused(t *testing.T) {
	yaml, addr := wsRestartBootstrap(t)
	renamed := strings.NewReplacer("name: ws\n", "name: ws2\n", "cluster_name: ws\n", "cluster_name: ws2\n", "cluster: ws }", "cluster: ws2 }").Replace(yaml)
	if strings.Count(renamed, "ws2") != 3 {
		t.Fatalf("the next epoch's config does not rename the cluster:\n%s", renamed)
	}
	dir := t.TempDir()
	base := strconv.Itoa(rand.IntN(1 << 20))
	args := []string{"--base-id", base, "--socket-path", dir, "--drain-time-s", "4"}
	old := runStrait(t, yaml, 1, append(args, "--restart-epoch", "0")...)

	const sessions = 4
	var exchanged atomic.Int64
	stop := make(chan struct{})
	errs := make(chan error, 2*sessions)
	var wg sync.WaitGroup
	open := func(from int) {
		for i := from; i < from+sessions; i++ {
			ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://localhost/")
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer ws.Close()
				errs <- longSession(ws, i, stop, &exchanged)
			}()
		}
	}
	// Sessions begun in epoch 0 move to epoch 1 (a resumed copy there);
	// more begin in epoch 1 (tunnelling streams). Epoch 2 refuses all.
	open(0)
	time.Sleep(400 * time.Millisecond)
	mid := runStrait(t, yaml, 1, append(args, "--restart-epoch", "1")...)
	if code := old.exitCode(t, 10*time.Second); code != 0 {
		t.Errorf("epoch 0 exited %d", code)
	}
	if m := movedRE.FindStringSubmatch(old.stderr.String()); m == nil || m[1] == "0" {
		t.Fatalf("epoch 0 moved no tunnel:\n%s", old.stderr.String())
	}
	open(sessions)
	time.Sleep(400 * time.Millisecond)
	runStrait(t, renamed, 1, append(args, "--restart-epoch", "2")...)
	testutil.Eventually(t, 5*time.Second, "epoch 1 to finish its migration", func() bool {
		return movedRE.MatchString(mid.stderr.String())
	})
	before := exchanged.Load()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// Ten messages a second each, over a second.
	if x := exchanged.Load() - before; x < 2*sessions*5 {
		t.Errorf("the kept sessions exchanged %d messages in a second after the refusal", x)
	}
	log := mid.stderr.String()
	if !strings.Contains(log, "did not take a connection") || !strings.Contains(log, "kept="+strconv.Itoa(2*sessions)) {
		t.Errorf("epoch 1's log does not tell of %d refused tunnels:\n%s", 2*sessions, log)
	}
	if code, _ := get(t, "http://"+addr+"/"); code != 200 {
		t.Errorf("the next epoch answered %d", code)
	}
	if code := mid.exitCode(t, 10*time.Second); code != 0 {
		t.Errorf("epoch 1 exited %d", code)
	}
}
