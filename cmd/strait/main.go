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
	levels := tracelog.NewLevels(lvl)
	log := slog.New(levels.Handler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: tracelog.Level, ReplaceAttr: tracelog.ReplaceAttr})))
	srv, err := build(f, log, levels)
	if err != nil {
		fmt.Fprintf(stderr, "invalid configuration:\n%s\n", indent(err.Error()))
		return 1
	}
	if f.mode == "validate" {
		fmt.Fprintln(stdout, "OK")
		return 0
	}
	return serve(srv, log, usr1)
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
			Concurrency:       uint32(runtime.GOMAXPROCS(0)), DisableHotRestart: true,
		},
	})
}

func commandMode(m string) adminv3.CommandLineOptions_Mode {
	if m == "validate" {
		return adminv3.CommandLineOptions_Validate
	}
	return adminv3.CommandLineOptions_Serve
}

func serve(srv *server.Server, log *slog.Logger, usr1 <-chan os.Signal) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.Start(ctx); err != nil {
		log.Error("start failed", "err", err)
		return 1
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

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }
