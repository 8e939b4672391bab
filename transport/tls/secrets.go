package tls

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
	"weak"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/transport"
	"google.golang.org/protobuf/proto"
)

// secretContext is a CommonTlsContext whose certificates or validation
// context come from secrets (static_resources.secrets or SDS). Each time
// one arrives or changes it builds the context again and hands the
// result to install; until all have arrived the context is not ready.
// A version that does not build is refused (NACKed) and the previous
// one keeps serving. Established connections keep the configuration
// they were made with.
type secretContext struct {
	base    *tlsv3.CommonTlsContext // without its secret references
	install func(*common) error

	mu     sync.Mutex
	certs  []*tlsv3.TlsCertificate // per tls_certificate_sds_secret_configs; nil until arrived
	wantVC bool
	defVC  *tlsv3.CertificateValidationContext // combined_validation_context's default
	vc     *tlsv3.CertificateValidationContext // from its secret; nil until arrived
	ready  bool
	// waits are its SDS secrets not yet arrived (the downstream's ticket
	// keys too).
	waits fetchWaits
}

// fetchWaits are a context's SDS secrets that have not arrived, each
// with its source's initial_fetch_timeout: how long the context may keep
// a listener or cluster warming. Envoy times each subscription out on
// its own, so only the missing ones count.
type fetchWaits struct {
	mu      sync.Mutex
	pending map[*tlsv3.SdsSecretConfig]time.Duration // 0: for ever
}

// add counts ref as missing until arrived; a static secret (no
// sds_config) is there at once.
func (w *fetchWaits) add(ref *tlsv3.SdsSecretConfig) {
	cs := ref.GetSdsConfig()
	if cs == nil {
		return
	}
	d := transport.DefaultFetchTimeout
	if t := cs.GetInitialFetchTimeout(); t != nil {
		d = t.AsDuration()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == nil {
		w.pending = map[*tlsv3.SdsSecretConfig]time.Duration{}
	}
	w.pending[ref] = d
}

func (w *fetchWaits) arrived(ref *tlsv3.SdsSecretConfig) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pending, ref)
}

// timeout is the longest wait among the missing secrets, 0 (for ever)
// when one of them waits for ever; Envoy's default when none is missing.
func (w *fetchWaits) timeout() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) == 0 {
		return transport.DefaultFetchTimeout
	}
	var d time.Duration
	for _, t := range w.pending {
		if t == 0 {
			return 0
		}
		d = max(d, t)
	}
	return d
}

// buildContext builds ctx: at once when it names no secret, else from
// its secrets as they come. install receives each built version.
func buildContext(bc *transport.BuildContext, ctx *tlsv3.CommonTlsContext, install func(*common) error) (*secretContext, error) {
	if ctx == nil {
		ctx = &tlsv3.CommonTlsContext{}
	}
	sc := &secretContext{base: proto.Clone(ctx).(*tlsv3.CommonTlsContext), install: install}
	sc.base.TlsCertificateSdsSecretConfigs = nil
	sc.base.ValidationContextType = nil
	if vc := ctx.GetValidationContext(); vc != nil {
		sc.base.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	type ref struct {
		cfg  *tlsv3.SdsSecretConfig
		path string
		set  func(sc *secretContext, s *tlsv3.Secret) error
	}
	var refs []ref
	for i, c := range ctx.GetTlsCertificateSdsSecretConfigs() {
		i := i
		sc.certs = append(sc.certs, nil)
		refs = append(refs, ref{c, fmt.Sprintf("common_tls_context.tls_certificate_sds_secret_configs[%d]", i), func(sc *secretContext, s *tlsv3.Secret) error {
			tc := s.GetTlsCertificate()
			if tc == nil {
				return errors.New("not a tls_certificate secret")
			}
			old := sc.certs[i]
			sc.certs[i] = tc
			return sc.rebuildLocked(func() { sc.certs[i] = old })
		}})
	}
	vcRef := ctx.GetValidationContextSdsSecretConfig()
	path := "common_tls_context.validation_context_sds_secret_config"
	if cvc := ctx.GetCombinedValidationContext(); cvc != nil {
		vcRef = cvc.GetValidationContextSdsSecretConfig()
		path = "common_tls_context.combined_validation_context.validation_context_sds_secret_config"
		sc.defVC = cvc.GetDefaultValidationContext()
	}
	if vcRef != nil {
		sc.wantVC = true
		refs = append(refs, ref{vcRef, path, func(sc *secretContext, s *tlsv3.Secret) error {
			vc := s.GetValidationContext()
			if vc == nil {
				return errors.New("not a validation_context secret")
			}
			old := sc.vc
			sc.vc = vc
			return sc.rebuildLocked(func() { sc.vc = old })
		}})
	}
	// The context's own parts must build, whatever its secrets bring.
	c, err := buildCommon(sc.base)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		sc.ready = true
		return sc, install(c)
	}
	if bc.Secrets == nil {
		return nil, config.At(refs[0].path, errors.New("no secret store"))
	}
	for _, r := range refs {
		sc.waits.add(r.cfg)
	}
	var cancels []func()
	for _, r := range refs {
		set, ref := r.set, r.cfg
		cancel, err := watchWeak(bc.Secrets, r.cfg, sc, func(sc *secretContext, s *tlsv3.Secret) error {
			// Arrived once handled, refused or not: Envoy's SDS
			// subscription stops holding its listener or cluster back
			// on a rejected first version too.
			defer sc.waits.arrived(ref)
			sc.mu.Lock()
			defer sc.mu.Unlock()
			return set(sc, s)
		})
		if err != nil {
			for _, f := range cancels {
				f()
			}
			return nil, config.At(r.path, err)
		}
		cancels = append(cancels, cancel)
	}
	for _, f := range cancels {
		runtime.AddCleanup(sc, func(f func()) { f() }, f)
	}
	return sc, nil
}

// watchWeak watches the secret ref names for owner, holding owner only
// weakly: a context nobody uses any more (its listener or cluster gone)
// is freed, and the caller's runtime.AddCleanup on it ends the watch.
func watchWeak[T any](src transport.SecretSource, ref *tlsv3.SdsSecretConfig, owner *T, fn func(*T, *tlsv3.Secret) error) (cancel func(), err error) {
	wp := weak.Make(owner)
	return src.Watch(ref.GetName(), ref.GetSdsConfig(), func(s *tlsv3.Secret) error {
		o := wp.Value()
		if o == nil {
			return nil
		}
		return fn(o, s)
	})
}

// rebuildLocked builds the context from its secrets, once all have come;
// on failure undo restores the previous secret.
func (sc *secretContext) rebuildLocked(undo func()) error {
	for _, c := range sc.certs {
		if c == nil {
			return nil
		}
	}
	if sc.wantVC && sc.vc == nil {
		return nil
	}
	ctx := proto.Clone(sc.base).(*tlsv3.CommonTlsContext)
	ctx.TlsCertificates = append(ctx.TlsCertificates, sc.certs...)
	if sc.wantVC {
		vc := &tlsv3.CertificateValidationContext{}
		if sc.defVC != nil {
			vc = proto.Clone(sc.defVC).(*tlsv3.CertificateValidationContext)
		}
		proto.Merge(vc, sc.vc)
		ctx.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	c, err := buildCommon(ctx)
	if err == nil {
		err = sc.install(c)
	}
	if err != nil {
		undo()
		return err
	}
	sc.ready = true
	return nil
}

// Ready reports whether every secret has arrived.
func (sc *secretContext) Ready() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.ready
}
