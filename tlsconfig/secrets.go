package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/straitproxy/strait/config"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Secrets is the secret store: the static secrets of the bootstrap and
// the SDS secrets accepted, by name, and who uses them. A TLS context
// watches the secrets it names; the store asks the management server
// for the SDS names watched (per config source), hands each watcher the
// secret with its files read (so a certificate and its key are read
// together), and again at each change: a new SDS version, or a file
// that changed on disk (checked every PollInterval, for rotation by
// file). SDS updates are per resource: a secret that does not load is
// refused by name and its previous version stays.
type Secrets struct {
	// subscribe is told the complete set of SDS names watched from a
	// config source whenever it changes (SetSubscriber).
	subscribe func(cs *corev3.ConfigSource, names []string)
	// CheckSource refuses an sds_config this process cannot subscribe to.
	CheckSource func(cs *corev3.ConfigSource) error
	Log         *slog.Logger
	// PollInterval is how often files named by watched secrets are read
	// again (default 1 s).
	PollInterval time.Duration

	mu sync.Mutex
	// changed is called after watchers got new secrets (SetChanged).
	changed func()
	set     map[string]*config.Resource // SDS, as applied
	static  map[string]*entry
	sds     map[string]*entry
	sources map[string]*source // by config source (protojson)
	polling bool
	stop    chan struct{}
}

// entry is one named secret and its watchers.
type entry struct {
	name     string
	raw      *tlsv3.Secret // as configured or delivered; nil: not yet
	mat      *tlsv3.Secret // raw with its files read in
	ver      uint64        // counts the versions of mat
	watchers map[*watcher]bool
	src      *source // SDS: where it is asked for
}

// watcher is one user of a secret. Deliveries to it are serialised and
// never go back to an older version than one it has seen.
type watcher struct {
	fn   func(*tlsv3.Secret) error
	mu   sync.Mutex
	seen uint64
}

// deliver hands version ver of a secret to the watcher, unless it has
// seen that one or a newer one.
func (w *watcher) deliver(mat *tlsv3.Secret, ver uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ver <= w.seen {
		return nil
	}
	w.seen = ver
	return w.fn(mat)
}

// source is one SDS config source and the names watched from it.
type source struct {
	cs    *corev3.ConfigSource
	names map[string]int // watchers per name
}

// NewSecrets makes an empty store.
func NewSecrets() *Secrets {
	return &Secrets{set: map[string]*config.Resource{}, static: map[string]*entry{}, sds: map[string]*entry{},
		sources: map[string]*source{}, stop: make(chan struct{})}
}

// SetStatic installs the bootstrap's static_resources.secrets.
func (s *Secrets) SetStatic(secrets []*tlsv3.Secret) error {
	var errs []error
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, sec := range secrets {
		path := fmt.Sprintf("static_resources.secrets[%d]", i)
		if sec.GetName() == "" {
			errs = append(errs, config.At(path+".name", errors.New("required")))
			continue
		}
		if s.static[sec.GetName()] != nil {
			errs = append(errs, config.At(path+".name", fmt.Errorf("duplicate secret %q", sec.GetName())))
			continue
		}
		mat, err := load(sec)
		if err != nil {
			errs = append(errs, config.At(path, err))
			continue
		}
		s.static[sec.GetName()] = &entry{name: sec.GetName(), raw: sec, mat: mat, ver: 1, watchers: map[*watcher]bool{}}
	}
	return errors.Join(errs...)
}

// Watch calls fn with the secret named name now if it is known, and
// again each time it changes, until cancel. sds nil names a static
// secret (which must exist); otherwise the secret comes by SDS from sds.
// fn runs without the store's lock; its error refuses the update (an
// SDS NACK, or a log line for a file change).
func (s *Secrets) Watch(name string, sds *corev3.ConfigSource, fn func(*tlsv3.Secret) error) (cancel func(), err error) {
	w := &watcher{fn: fn}
	s.mu.Lock()
	var e *entry
	var sub *source
	if sds == nil {
		if e = s.static[name]; e == nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("unknown static secret %q (static_resources.secrets)", name)
		}
	} else {
		if s.CheckSource != nil {
			if err := s.CheckSource(sds); err != nil {
				s.mu.Unlock()
				return nil, err
			}
		}
		key := protojson.Format(sds)
		if sub = s.sources[key]; sub == nil {
			sub = &source{cs: sds, names: map[string]int{}}
			s.sources[key] = sub
		}
		if e = s.sds[name]; e == nil {
			e = &entry{name: name, watchers: map[*watcher]bool{}, src: sub}
			if r := s.set[name]; r != nil {
				e.raw = r.Message.(*tlsv3.Secret)
				e.mat, _ = load(e.raw)
				e.ver = 1
			}
			s.sds[name] = e
		}
		sub.names[name]++
	}
	e.watchers[w] = true
	mat, ver := e.mat, e.ver
	s.startPollingLocked()
	var names []string
	if sub != nil && sub.names[name] == 1 {
		names = sortedNames(sub.names)
	}
	s.mu.Unlock()
	sub2 := s.subscriber()
	if names != nil && sub2 != nil {
		sub2(sds, names)
	}
	if mat != nil {
		if err := w.deliver(mat, ver); err != nil {
			s.unwatch(e, w)
			return nil, fmt.Errorf("secret %q: %w", name, err)
		}
	}
	var once sync.Once
	return func() { once.Do(func() { s.unwatch(e, w) }) }, nil
}

func (s *Secrets) unwatch(e *entry, w *watcher) {
	s.mu.Lock()
	delete(e.watchers, w)
	var names []string
	var cs *corev3.ConfigSource
	if sub := e.src; sub != nil {
		if sub.names[e.name]--; sub.names[e.name] <= 0 {
			delete(sub.names, e.name)
			if len(e.watchers) == 0 && s.sds[e.name] == e {
				delete(s.sds, e.name)
			}
			names, cs = sortedNames(sub.names), sub.cs
		}
	}
	s.mu.Unlock()
	sub2 := s.subscriber()
	if cs != nil && sub2 != nil {
		sub2(cs, names)
	}
}

// SetSubscriber installs the SDS subscription hook and tells it the
// names already watched (static clusters and listeners are built before
// the xDS clients).
func (s *Secrets) SetSubscriber(fn func(cs *corev3.ConfigSource, names []string)) {
	s.mu.Lock()
	s.subscribe = fn
	type want struct {
		cs    *corev3.ConfigSource
		names []string
	}
	var ws []want
	for _, src := range s.sources {
		if len(src.names) > 0 {
			ws = append(ws, want{src.cs, sortedNames(src.names)})
		}
	}
	s.mu.Unlock()
	for _, w := range ws {
		fn(w.cs, w.names)
	}
}

// SetChanged installs what is called after watchers got new secrets (the
// listener manager rechecks its warming listeners).
func (s *Secrets) SetChanged(fn func()) {
	s.mu.Lock()
	s.changed = fn
	s.mu.Unlock()
}

func (s *Secrets) changedHook() func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Secrets) subscriber() func(cs *corev3.ConfigSource, names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribe
}

func sortedNames(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Apply takes the complete set of SDS secrets; it returns those refused,
// by name. A secret refused by a watcher (its TLS context could not build
// with it) is refused as a whole: the previous version stays, for the
// watchers that took the new one too, and for those that come later.
func (s *Secrets) Apply(set map[string]*config.Resource) map[string]error {
	errs := map[string]error{}
	next := map[string]*config.Resource{}
	type delivery struct {
		e              *entry
		mat            *tlsv3.Secret
		ver            uint64
		ws             []*watcher
		old            *config.Resource
		oldRaw, oldMat *tlsv3.Secret
	}
	var out []delivery
	s.mu.Lock()
	for name, r := range set {
		old := s.set[name]
		if old == r {
			next[name] = r
			continue
		}
		sec := r.Message.(*tlsv3.Secret)
		mat, err := load(sec)
		if err != nil {
			errs[name] = fmt.Errorf("secret %q: %w", name, err)
			if old != nil {
				next[name] = old
			}
			continue
		}
		next[name] = r
		if e := s.sds[name]; e != nil {
			d := delivery{e: e, mat: mat, old: old, oldRaw: e.raw, oldMat: e.mat}
			e.raw, e.mat = sec, mat
			e.ver++
			d.ver = e.ver
			for w := range e.watchers {
				d.ws = append(d.ws, w)
			}
			out = append(out, d)
		}
	}
	s.set = next
	s.mu.Unlock()
	for _, d := range out {
		var failed error
		for _, w := range d.ws {
			if err := w.deliver(d.mat, d.ver); err != nil && failed == nil {
				failed = err
			}
		}
		if failed == nil {
			continue
		}
		errs[d.e.name] = fmt.Errorf("secret %q: %w", d.e.name, failed)
		// Back to the previous version, as a newer one for the watchers
		// that took the refused one.
		s.mu.Lock()
		if d.e.ver == d.ver && d.oldMat != nil {
			d.e.raw, d.e.mat = d.oldRaw, d.oldMat
			d.e.ver++
			back := d.e.ver
			if d.old != nil {
				s.set[d.e.name] = d.old
			} else {
				delete(s.set, d.e.name)
			}
			s.mu.Unlock()
			for _, w := range d.ws {
				w.deliver(d.oldMat, back)
			}
			continue
		}
		s.mu.Unlock()
	}
	if f := s.changedHook(); len(out) > 0 && f != nil {
		f()
	}
	return errs
}

// startPollingLocked starts the file poller once some watched secret
// names a file.
func (s *Secrets) startPollingLocked() {
	if s.polling {
		return
	}
	s.polling = true
	d := s.PollInterval
	if d <= 0 {
		d = time.Second
	}
	go func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.poll()
			}
		}
	}()
}

// Close stops the file poller.
func (s *Secrets) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
}

// poll reads the files of watched secrets again and hands changed ones
// to their watchers; a pair caught mid-rotation (a key that does not
// match its certificate yet) is left for the next poll.
func (s *Secrets) poll() {
	type delivery struct {
		e   *entry
		mat *tlsv3.Secret
		ver uint64
		ws  []*watcher
	}
	var out []delivery
	s.mu.Lock()
	for _, m := range []map[string]*entry{s.static, s.sds} {
		for _, e := range m {
			if e.raw == nil || len(e.watchers) == 0 || !hasFiles(e.raw) {
				continue
			}
			mat, err := load(e.raw)
			if err != nil || proto.Equal(mat, e.mat) {
				continue
			}
			e.mat = mat
			e.ver++
			d := delivery{e: e, mat: mat, ver: e.ver}
			for w := range e.watchers {
				d.ws = append(d.ws, w)
			}
			out = append(out, d)
		}
	}
	s.mu.Unlock()
	for _, d := range out {
		for _, w := range d.ws {
			if err := w.deliver(d.mat, d.ver); err != nil && s.Log != nil {
				s.Log.Warn("a rotated secret was refused; the previous one keeps serving", "secret", d.e.name, "err", err)
			}
		}
		if s.Log != nil {
			s.Log.Info("secret files changed", "secret", d.e.name)
		}
	}
	if f := s.changedHook(); len(out) > 0 && f != nil {
		f()
	}
}

// Get returns the SDS secret named name.
func (s *Secrets) Get(name string) *config.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set[name]
}

// Dump returns the SDS secrets, sorted by name.
func (s *Secrets) Dump() []*config.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.set))
	for n := range s.set {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*config.Resource, len(names))
	for i, n := range names {
		out[i] = s.set[n]
	}
	return out
}

// StaticDump returns the static secrets as configured, sorted by name.
func (s *Secrets) StaticDump() []*tlsv3.Secret {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*tlsv3.Secret
	for _, e := range s.static {
		out = append(out, e.raw)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// supported is what a secret may hold: the fields the TLS contexts build.
var supported = config.NewSupport(map[string]string{
	"envoy.extensions.transport_sockets.tls.v3.Secret":         `name tls_certificate validation_context session_ticket_keys`,
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate": `certificate_chain private_key watched_directory`,
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": `trusted_ca system_root_certs
		match_typed_subject_alt_names match_subject_alt_names verify_certificate_spki verify_certificate_hash
		crl only_verify_leaf_cert_crl allow_expired_certificate trust_chain_verification max_verify_depth
		suppress_client_ca_list watched_directory`,
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": `san_type matcher`,
	"envoy.extensions.transport_sockets.tls.v3.TlsSessionTicketKeys":  `keys`,
	"envoy.config.core.v3.DataSource":                                 `filename inline_bytes inline_string`,
	"envoy.config.core.v3.WatchedDirectory":                           `path`,
})

// load checks sec and returns it with its files read in.
func load(sec *tlsv3.Secret) (*tlsv3.Secret, error) {
	mat := proto.Clone(sec).(*tlsv3.Secret)
	if err := materialize(mat); err != nil {
		return nil, err
	}
	if err := Check(mat); err != nil {
		return nil, err
	}
	return mat, nil
}

// materialize replaces the file data sources of sec by their bytes.
func materialize(sec *tlsv3.Secret) error {
	read := func(ds *corev3.DataSource, path string) error {
		if f := ds.GetFilename(); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return config.At(path, err)
			}
			ds.Specifier = &corev3.DataSource_InlineBytes{InlineBytes: b}
		}
		return nil
	}
	var errs []error
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		errs = append(errs, read(t.TlsCertificate.GetCertificateChain(), "tls_certificate.certificate_chain"),
			read(t.TlsCertificate.GetPrivateKey(), "tls_certificate.private_key"))
	case *tlsv3.Secret_ValidationContext:
		errs = append(errs, read(t.ValidationContext.GetTrustedCa(), "validation_context.trusted_ca"),
			read(t.ValidationContext.GetCrl(), "validation_context.crl"))
	case *tlsv3.Secret_SessionTicketKeys:
		for i, k := range t.SessionTicketKeys.GetKeys() {
			errs = append(errs, read(k, fmt.Sprintf("session_ticket_keys.keys[%d]", i)))
		}
	}
	return errors.Join(errs...)
}

// hasFiles reports whether sec names a file.
func hasFiles(sec *tlsv3.Secret) bool {
	var ds []*corev3.DataSource
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		ds = []*corev3.DataSource{t.TlsCertificate.GetCertificateChain(), t.TlsCertificate.GetPrivateKey()}
	case *tlsv3.Secret_ValidationContext:
		ds = []*corev3.DataSource{t.ValidationContext.GetTrustedCa(), t.ValidationContext.GetCrl()}
	case *tlsv3.Secret_SessionTicketKeys:
		ds = t.SessionTicketKeys.GetKeys()
	}
	for _, d := range ds {
		if d.GetFilename() != "" {
			return true
		}
	}
	return false
}

// Check refuses a secret that a TLS context could not load: a field not
// supported, a certificate without its key (or the reverse), PEM that
// does not parse, a key that does not match its certificate, a CA bundle
// with no certificate, a ticket key that is not 80 bytes. Files are read
// when given by name.
func Check(sec *tlsv3.Secret) error {
	if errs := config.ValidationErrors(sec.ValidateAll()); len(errs) > 0 {
		return config.Join(errs)
	}
	if err := supported.Check(sec); err != nil {
		return err
	}
	switch t := sec.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		tc := t.TlsCertificate
		cert, err := DataSource(tc.GetCertificateChain())
		if err != nil {
			return config.At("tls_certificate.certificate_chain", err)
		}
		key, err := DataSource(tc.GetPrivateKey())
		if err != nil {
			return config.At("tls_certificate.private_key", err)
		}
		if cert == nil || key == nil {
			return config.At("tls_certificate", errors.New("certificate_chain and private_key are both required"))
		}
		if _, err := tls.X509KeyPair(cert, key); err != nil {
			return config.At("tls_certificate", err)
		}
	case *tlsv3.Secret_ValidationContext:
		ca, err := DataSource(t.ValidationContext.GetTrustedCa())
		if err != nil {
			return config.At("validation_context.trusted_ca", err)
		}
		if ca != nil && !x509.NewCertPool().AppendCertsFromPEM(ca) {
			return config.At("validation_context.trusted_ca", errors.New("no PEM certificate found"))
		}
	case *tlsv3.Secret_SessionTicketKeys:
		if len(t.SessionTicketKeys.GetKeys()) == 0 {
			return config.At("session_ticket_keys.keys", errors.New("at least one"))
		}
		for i, k := range t.SessionTicketKeys.GetKeys() {
			b, err := DataSource(k)
			if err != nil || len(b) != 80 {
				return config.At(fmt.Sprintf("session_ticket_keys.keys[%d]", i), fmt.Errorf("%d bytes, want 80 (%v)", len(b), err))
			}
		}
	case nil:
		return errors.New("a secret needs a type (tls_certificate, validation_context or session_ticket_keys)")
	default:
		return fmt.Errorf("secret type %T is not supported (supported: tls_certificate, validation_context, session_ticket_keys)", t)
	}
	return nil
}

// DataSource reads an inline or file data source (nil when unset).
func DataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case nil:
		return nil, nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_Filename:
		return os.ReadFile(s.Filename)
	}
	return nil, fmt.Errorf("unsupported data source")
}
