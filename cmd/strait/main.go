// Command strait is the proxy. Its flags are spelled as Envoy's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/tracelog"
	"github.com/straitproxy/strait/network"
	"github.com/straitproxy/strait/server"
	"google.golang.org/protobuf/types/known/durationpb"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

type flags struct {
	configPath, configYAML, mode, logLevel string
	serviceNode, serviceCluster            string
	drainTimeS                             int
	fileFlushMs                            int
	restartEpoch, baseID                   int
	socketPath                             string
	showVersion, adminAllowRemote          bool
	workers                                int
	ioModel                                string
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("strait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.configPath, "c", "", "path to the bootstrap config (YAML for .yaml/.yml, else JSON)")
	fs.StringVar(&f.configPath, "config-path", "", "same as -c")
	fs.StringVar(&f.configYAML, "config-yaml", "", "bootstrap YAML merged over the config file")
	fs.StringVar(&f.mode, "mode", "serve", "serve or validate")
	fs.StringVar(&f.logLevel, "log-level", "info", "trace, debug, info, warning, error, critical or off")
	fs.StringVar(&f.logLevel, "l", "info", "same as --log-level")
	fs.StringVar(&f.serviceNode, "service-node", "", "node id (overrides node.id)")
	fs.StringVar(&f.serviceCluster, "service-cluster", "", "node cluster (overrides node.cluster)")
	fs.IntVar(&f.drainTimeS, "drain-time-s", 600, "seconds to let connections finish when draining")
	fs.IntVar(&f.fileFlushMs, "file-flush-interval-msec", 1000, "longest time access log lines wait before they are written")
	fs.IntVar(&f.baseID, "base-id", -1, "hot restart family id: processes of one family hand over their sockets (-1: hot restart off)")
	fs.IntVar(&f.restartEpoch, "restart-epoch", 0, "hot restart epoch: N > 0 takes over from epoch N-1 of the same --base-id")
	fs.StringVar(&f.socketPath, "socket-path", os.TempDir(), "directory of the hot restart unix sockets")
	fs.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	fs.BoolVar(&f.adminAllowRemote, "admin-allow-remote", false, "allow the admin server on a non-loopback address")
	fs.IntVar(&f.workers, "workers", 0, "maximum request workers (default 16384)")
	fs.StringVar(&f.ioModel, "io-model", "netpoll", "default I/O model of listeners: netpoll or epoll")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.mode != "serve" && f.mode != "validate" {
		return nil, fmt.Errorf("--mode must be serve or validate, got %q", f.mode)
	}
	return f, nil
}

func logLevel(s string) (slog.Level, error) {
	l, err := tracelog.ParseLevel(s)
	if err != nil {
		return 0, fmt.Errorf("--log-level: %w", err)
	}
	return l, nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, err)
		return 1
	}
	if f.showVersion {
		fmt.Fprintf(stdout, "strait version %s\n", version)
		return 0
	}
	lvl, err := logLevel(f.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// The handler lets every level through; the levels (changeable by
	// the admin's /logging) decide.
	// SIGUSR1 reopens the access log files, as Envoy's does; caught from
	// here on, so a rotation's signal during start-up is not fatal.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	if f.restartEpoch < 0 || f.restartEpoch > 0 && f.baseID < 0 {
		fmt.Fprintln(stderr, "--restart-epoch N > 0 needs --base-id (the family of the process it takes over from)")
		return 1
	}
	// A hot restart asks the previous epoch for its listening sockets
	// before anything binds; a config that fails below leaves the
	// previous process untouched (it handed duplicates).
	var parent *server.Parent
	if f.restartEpoch > 0 {
		var err error
		if parent, err = server.ConnectParent(server.UpgradeSocket(f.socketPath, f.baseID, f.restartEpoch-1)); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer parent.Close()
		if _, err := parent.Sockets(); err != nil {
			network.DropInherited()
			fmt.Fprintln(stderr, "hot restart:", err)
			return 1
		}
	}
	levels := tracelog.NewLevels(lvl)
	log := slog.New(levels.Handler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: tracelog.Level, ReplaceAttr: tracelog.ReplaceAttr})))
	srv, err := build(f, log, levels)
	if err != nil {
		network.DropInherited()
		fmt.Fprintf(stderr, "invalid configuration:\n%s\n", indent(err.Error()))
		return 1
	}
	if f.mode == "validate" {
		network.DropInherited()
		fmt.Fprintln(stdout, "OK")
		return 0
	}
	return serve(srv, log, usr1, f, parent)
}

func build(f *flags, log *slog.Logger, levels *tracelog.Levels) (*server.Server, error) {
	b, err := config.LoadFile(f.configPath, f.configYAML)
	if err != nil {
		return nil, err
	}
	if f.serviceNode != "" || f.serviceCluster != "" {
		if b.Node == nil {
			b.Node = nodeProto()
		}
		if f.serviceNode != "" {
			b.Node.Id = f.serviceNode
		}
		if f.serviceCluster != "" {
			b.Node.Cluster = f.serviceCluster
		}
	}
	io, err := network.Model(f.ioModel)
	if err != nil {
		return nil, fmt.Errorf("--io-model: %w", err)
	}
	return server.New(b, server.Options{
		IOModel:           io,
		Log:               log,
		DrainTime:         time.Duration(f.drainTimeS) * time.Second,
		AdminAllowRemote:  f.adminAllowRemote,
		Workers:           f.workers,
		Version:           version,
		FileFlushInterval: time.Duration(f.fileFlushMs) * time.Millisecond,
		LogLevels:         levels,
		CommandLine: &adminv3.CommandLineOptions{
			ConfigPath: f.configPath, ConfigYaml: f.configYAML, LogLevel: f.logLevel,
			ServiceNode: f.serviceNode, ServiceCluster: f.serviceCluster, Mode: commandMode(f.mode),
			DrainTime:         durationpb.New(time.Duration(f.drainTimeS) * time.Second),
			FileFlushInterval: durationpb.New(time.Duration(f.fileFlushMs) * time.Millisecond),
			Concurrency:       uint32(runtime.GOMAXPROCS(0)), DisableHotRestart: f.baseID < 0,
			BaseId: uint64(max(f.baseID, 0)), RestartEpoch: uint32(f.restartEpoch), SocketPath: f.socketPath,
		},
	})
}

func commandMode(m string) adminv3.CommandLineOptions_Mode {
	if m == "validate" {
		return adminv3.CommandLineOptions_Validate
	}
	return adminv3.CommandLineOptions_Serve
}

func serve(srv *server.Server, log *slog.Logger, usr1 <-chan os.Signal, f *flags, parent *server.Parent) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.Start(ctx); err != nil {
		network.DropInherited()
		log.Error("start failed", "err", err)
		return 1
	}
	if f.baseID >= 0 {
		if err := srv.ServeUpgrades(server.UpgradeSocket(f.socketPath, f.baseID, f.restartEpoch)); err != nil {
			log.Error("hot restart", "err", err)
			srv.Shutdown(context.Background())
			return 1
		}
	}
	if parent != nil {
		takeOver(ctx, srv, log, parent)
	}
	for waiting := true; waiting; {
		select {
		case <-usr1:
			log.Info("reopening access logs", "signal", "SIGUSR1")
			srv.ReopenLogs()
		case <-ctx.Done():
			log.Info("draining", "signal", "SIGTERM/SIGINT")
			waiting = false
		case <-srv.Quitting():
			log.Info("draining", "admin", "/quitquitquit")
			waiting = false
		}
	}
	srv.Shutdown(context.Background())
	log.Info("stopped")
	return 0
}

// takeOver finishes a hot restart once this process serves: the
// parent's counters are added to ours, and once the initial
// configuration is in (xDS included, at most a minute), the parent is
// told to drain and exit; inherited sockets no listener took are closed.
func takeOver(ctx context.Context, srv *server.Server, log *slog.Logger, parent *server.Parent) {
	if counters, firstUp, err := parent.Stats(); err == nil {
		srv.AdoptParent(counters, firstUp)
	} else {
		log.Warn("hot restart: the parent's stats", "err", err)
	}
	for deadline := time.Now().Add(time.Minute); !srv.Ready() && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(20 * time.Millisecond)
	}
	if ctx.Err() != nil || !srv.Ready() {
		// Stopped, or not serving its configuration: the parent keeps
		// serving and this process does not take over.
		log.Warn("hot restart: not taking over; the previous epoch keeps serving", "ready", srv.Ready())
		parent.Close()
		return
	}
	if n := network.DropInherited(); n > 0 {
		log.Info("hot restart: closed sockets the new configuration does not listen on", "count", n)
	}
	go func() {
		// The parent drains; what it still counts is added to ours.
		defer parent.Close()
		if err := parent.Follow(srv); err != nil {
			log.Warn("hot restart: the draining parent", "err", err)
		}
	}()
	log.Info("hot restart: took over from the previous epoch")
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }
