// Command istio-pilot-peer runs Istio's pilot in-process, with fake
// Kubernetes clients, serving ADS in plaintext on a loopback port: the
// control plane of the end-to-end Istio tests (test/istio_test.go).
//
//	istio-pilot-peer -config FILE [-mesh FILE] [-kube FILE] [-identity SPIFFE-ID]
//
// It prints "ADS <address>" once pilot serves, then reads commands on
// stdin, one per line, each answered with one line ("ok ..." or
// "error ..."):
//
//	apply FILE    create or replace the Istio resources in FILE
//	delete FILE   delete the Istio resources named in FILE
//
// It exits when stdin closes or on SIGTERM.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/mesh"
	istiolog "istio.io/istio/pkg/log"
	"istio.io/istio/pkg/security"
)

func main() {
	cfgPath := flag.String("config", "", "Istio resources (multi-document YAML) to start with")
	meshPath := flag.String("mesh", "", "Istio's MeshConfig (YAML, as in the istio ConfigMap's mesh key) over its defaults")
	kubePath := flag.String("kube", "", "Kubernetes objects (multi-document YAML: Secrets for credentialName) to start with")
	identity := flag.String("identity", "", "with XDS_AUTH_PLAINTEXT=true in the environment: the SPIFFE identity every plaintext ADS client is taken to have "+
		"(what istiod learns from a workload certificate on its TLS port; lets pilot serve credentialName secrets)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("istio-pilot-peer: ")
	// Pilot's log to stderr: stdout carries this command's answers.
	lo := istiolog.DefaultOptions()
	lo.OutputPaths = []string{"stderr"}
	lo.ErrorOutputPaths = []string{"stderr"}
	// ISTIO_PEER_DEBUG=delta,ads turns on those scopes' debug logs.
	for _, sc := range strings.Split(os.Getenv("ISTIO_PEER_DEBUG"), ",") {
		if sc != "" {
			lo.SetDefaultOutputLevel(sc, istiolog.DebugLevel)
		}
	}
	if err := istiolog.Configure(lo); err != nil {
		log.Fatal(err)
	}
	initial := ""
	if *cfgPath != "" {
		b, err := os.ReadFile(*cfgPath)
		if err != nil {
			log.Fatal(err)
		}
		initial = string(b)
	}
	kube := ""
	if *kubePath != "" {
		b, err := os.ReadFile(*kubePath)
		if err != nil {
			log.Fatal(err)
		}
		kube = string(b)
	}
	var meshCfg *meshconfig.MeshConfig
	if *meshPath != "" {
		b, err := os.ReadFile(*meshPath)
		if err != nil {
			log.Fatal(err)
		}
		if meshCfg, err = mesh.ApplyMeshConfigDefaults(string(b)); err != nil {
			log.Fatalf("-mesh: %v", err)
		}
	}
	f := &failer{}
	fds := xds.NewFakeDiscoveryServer(f, xds.FakeOptions{
		MeshConfig:                 meshCfg,
		ConfigString:               initial,
		KubernetesObjectString:     kube,
		DisableSecretAuthorization: true,
		ListenerBuilder:            func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") },
	})
	if *identity != "" {
		fds.Discovery.Authenticators = append(fds.Discovery.Authenticators, fixedIdentity(*identity))
	}
	fmt.Printf("ADS %s\n", fds.Listener.Addr())
	os.Stdout.Sync()

	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			verb, path, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
			n, err := command(fds, verb, path)
			if err != nil {
				fmt.Printf("error %v\n", err)
				continue
			}
			fmt.Printf("ok %d\n", n)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-sig:
	case <-done:
	}
	f.cleanup()
}

// command applies or deletes the resources in a file; it returns how
// many there were.
func command(fds *xds.FakeDiscoveryServer, verb, path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	cfgs, _, err := crd.ParseInputs(string(b))
	if err != nil {
		return 0, err
	}
	store := fds.Store()
	for _, c := range cfgs {
		if c.Namespace == "" {
			c.Namespace = "default"
		}
		switch verb {
		case "apply":
			if store.Get(c.GroupVersionKind, c.Name, c.Namespace) != nil {
				_, err = store.Update(c)
			} else {
				_, err = store.Create(c)
			}
		case "delete":
			err = store.Delete(c.GroupVersionKind, c.Name, c.Namespace, nil)
		default:
			return 0, fmt.Errorf("unknown command %q", verb)
		}
		if err != nil {
			return 0, fmt.Errorf("%s %s/%s: %v", c.GroupVersionKind.Kind, c.Namespace, c.Name, err)
		}
	}
	return len(cfgs), nil
}

// fixedIdentity authenticates every caller as one SPIFFE identity: the
// test's stand-in for istiod's check of a workload certificate.
type fixedIdentity string

func (id fixedIdentity) Authenticate(security.AuthContext) (*security.Caller, error) {
	return &security.Caller{AuthSource: security.AuthSourceClientCertificate, Identities: []string{string(id)}}, nil
}

func (fixedIdentity) AuthenticatorType() string { return "FixedIdentity" }

// failer is the test.Failer pilot's fake server wants: a failure ends
// the process; cleanups run at exit.
type failer struct {
	mu       sync.Mutex
	cleanups []func()
}

func (f *failer) Fail()                     { log.Fatal("failed") }
func (f *failer) FailNow()                  { log.Fatal("failed") }
func (f *failer) Fatal(a ...any)            { log.Fatal(a...) }
func (f *failer) Fatalf(s string, a ...any) { log.Fatalf(s, a...) }
func (f *failer) Log(a ...any)              { log.Print(a...) }
func (f *failer) Logf(s string, a ...any)   { log.Printf(s, a...) }
func (f *failer) Helper()                   {}
func (f *failer) Skip(a ...any)             { log.Fatal(a...) }
func (f *failer) TempDir() string {
	d, err := os.MkdirTemp("", "istio-pilot-peer")
	if err != nil {
		log.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (f *failer) Cleanup(fn func()) {
	f.mu.Lock()
	f.cleanups = append(f.cleanups, fn)
	f.mu.Unlock()
}

func (f *failer) cleanup() {
	f.mu.Lock()
	fns := f.cleanups
	f.cleanups = nil
	f.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}
