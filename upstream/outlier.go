package upstream

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/stats"
)

// Outlier detection (a cluster's outlier_detection), as Envoy does it:
// each host's results (the status it answered with; a connect failure,
// reset or timeout of the proxy's own) feed consecutive-error counters
// that eject the host the moment one reaches its threshold, and
// per-interval success counts that eject, at each interval, the hosts
// whose success rate lies too far below the others' or whose failure
// share is too high. An ejected host is unhealthy: it leaves the pick
// set (priority health and the panic threshold count it so) until its
// ejection time, base_ejection_time times its ejection count capped at
// max_ejection_time, has passed at an interval's check; each interval it
// stays in, its count goes down by one. At most max_ejection_percent of
// the hosts are out at a time (the first always may be).

// The ejection types, with their stat names.
const (
	ej5xx = iota
	ejGateway
	ejLocal
	ejSuccessRate
	ejSuccessRateLocal
	ejFailurePct
	ejFailurePctLocal
	numEjectionTypes
)

var ejectionNames = [numEjectionTypes]string{"consecutive_5xx", "consecutive_gateway_failure",
	"consecutive_local_origin_failure", "success_rate", "local_origin_success_rate",
	"failure_percentage", "local_origin_failure_percentage"}

// Failure is a failure of the proxy's own on an attempt (local origin).
type Failure int

// The local-origin failures.
const (
	// FailConnect: no connection (refused, connect timeout, reset).
	FailConnect Failure = iota
	// FailTimeout: no answer in time.
	FailTimeout
	// FailReset: the connection or stream broke under the request.
	FailReset
)

type outlierConfig struct {
	interval, baseEjection, maxEjection, jitter time.Duration
	maxEjectionPercent                          float64
	consecutive                                 [3]uint32 // 5xx, gateway, local origin
	enforcing                                   [numEjectionTypes]uint32
	split, alwaysEjectOne                       bool
	srMinHosts, srVolume                        uint64
	srStdevFactor                               float64
	fpThreshold                                 float64
	fpMinHosts, fpVolume                        uint64
}

func buildOutlierConfig(od *clusterv3.OutlierDetection) (*outlierConfig, error) {
	if len(od.GetMonitors()) > 0 {
		return nil, config.At("monitors", fmt.Errorf("outlier detection monitors are not supported"))
	}
	ms := func(d interface{ AsDuration() time.Duration }, isNil bool, def time.Duration) time.Duration {
		if isNil {
			return def
		}
		return d.AsDuration()
	}
	u := func(v interface{ GetValue() uint32 }, isNil bool, def uint32) uint32 {
		if isNil {
			return def
		}
		return v.GetValue()
	}
	c := &outlierConfig{
		interval:           ms(od.GetInterval(), od.GetInterval() == nil, 10*time.Second),
		baseEjection:       ms(od.GetBaseEjectionTime(), od.GetBaseEjectionTime() == nil, 30*time.Second),
		maxEjection:        ms(od.GetMaxEjectionTime(), od.GetMaxEjectionTime() == nil, 0),
		jitter:             ms(od.GetMaxEjectionTimeJitter(), od.GetMaxEjectionTimeJitter() == nil, 0),
		maxEjectionPercent: float64(min(100, u(od.GetMaxEjectionPercent(), od.GetMaxEjectionPercent() == nil, 10))),
		split:              od.GetSplitExternalLocalOriginErrors(),
		alwaysEjectOne:     od.GetAlwaysEjectOneHost().GetValue(),
		srMinHosts:         uint64(u(od.GetSuccessRateMinimumHosts(), od.GetSuccessRateMinimumHosts() == nil, 5)),
		srVolume:           uint64(u(od.GetSuccessRateRequestVolume(), od.GetSuccessRateRequestVolume() == nil, 100)),
		srStdevFactor:      float64(u(od.GetSuccessRateStdevFactor(), od.GetSuccessRateStdevFactor() == nil, 1900)) / 1000,
		fpThreshold:        float64(u(od.GetFailurePercentageThreshold(), od.GetFailurePercentageThreshold() == nil, 85)),
		fpMinHosts:         uint64(u(od.GetFailurePercentageMinimumHosts(), od.GetFailurePercentageMinimumHosts() == nil, 5)),
		fpVolume:           uint64(u(od.GetFailurePercentageRequestVolume(), od.GetFailurePercentageRequestVolume() == nil, 50)),
	}
	c.consecutive = [3]uint32{
		u(od.GetConsecutive_5Xx(), od.GetConsecutive_5Xx() == nil, 5),
		u(od.GetConsecutiveGatewayFailure(), od.GetConsecutiveGatewayFailure() == nil, 5),
		u(od.GetConsecutiveLocalOriginFailure(), od.GetConsecutiveLocalOriginFailure() == nil, 5),
	}
	c.enforcing = [numEjectionTypes]uint32{
		ej5xx:              u(od.GetEnforcingConsecutive_5Xx(), od.GetEnforcingConsecutive_5Xx() == nil, 100),
		ejGateway:          u(od.GetEnforcingConsecutiveGatewayFailure(), od.GetEnforcingConsecutiveGatewayFailure() == nil, 0),
		ejLocal:            u(od.GetEnforcingConsecutiveLocalOriginFailure(), od.GetEnforcingConsecutiveLocalOriginFailure() == nil, 100),
		ejSuccessRate:      u(od.GetEnforcingSuccessRate(), od.GetEnforcingSuccessRate() == nil, 100),
		ejSuccessRateLocal: u(od.GetEnforcingLocalOriginSuccessRate(), od.GetEnforcingLocalOriginSuccessRate() == nil, 100),
		ejFailurePct:       u(od.GetEnforcingFailurePercentage(), od.GetEnforcingFailurePercentage() == nil, 0),
		ejFailurePctLocal:  u(od.GetEnforcingFailurePercentageLocalOrigin(), od.GetEnforcingFailurePercentageLocalOrigin() == nil, 0),
	}
	if od.GetMaxEjectionTime() == nil {
		c.maxEjection = max(300*time.Second, c.baseEjection) // Envoy's default
	}
	switch {
	case c.interval <= 0:
		return nil, config.At("interval", fmt.Errorf("must be positive"))
	case c.maxEjection < c.baseEjection:
		return nil, config.At("max_ejection_time", fmt.Errorf("%v is less than base_ejection_time %v", c.maxEjection, c.baseEjection))
	}
	for i, e := range c.enforcing {
		if e > 100 {
			return nil, fmt.Errorf("enforcing percentage of %s: %d is over 100", ejectionNames[i], e)
		}
	}
	if c.fpThreshold > 100 {
		return nil, config.At("failure_percentage_threshold", fmt.Errorf("%v is over 100", c.fpThreshold))
	}
	return c, nil
}

// hostMonitor is a host's outlier state. The counters are the workers'
// (atomics); the ejection state is the detector's (under its mutex),
// except ejected, which picks and the admin page read.
type hostMonitor struct {
	consecutive [3]atomic.Uint32
	// this interval's results, external and local origin (the detector
	// takes them at each interval)
	total, success [2]atomic.Uint64
	ejected        atomic.Bool
	ejectedAt      time.Time
	backoff        uint32
	ejections      uint32
	lastRate       [2]float64 // the last interval's success rates (-1: too few requests)
	jitter         time.Duration
}

// outlierDetector is a cluster's.
type outlierDetector struct {
	cfg *outlierConfig
	c   *Cluster
	mu  sync.Mutex
	// out is how many of the cluster's hosts this detector ejected (the
	// ejections_active gauge, shared by every version of the cluster,
	// adds them up); stopped: the cluster is retired.
	out     int
	stopped bool
	active  *stats.Gauge
	total   *stats.Counter
	over    *stats.Counter
	enf     [numEjectionTypes]*stats.Counter
	det     [numEjectionTypes]*stats.Counter
}

func newOutlierDetector(c *Cluster, cfg *outlierConfig) *outlierDetector {
	sc := c.statsScope.Scope("outlier_detection", "", "")
	d := &outlierDetector{cfg: cfg, c: c, active: sc.Gauge("ejections_active"),
		total: sc.Counter("ejections_enforced_total"), over: sc.Counter("ejections_overflow")}
	for i, n := range ejectionNames {
		d.enf[i] = sc.Counter("ejections_enforced_" + n)
		d.det[i] = sc.Counter("ejections_detected_" + n)
	}
	return d
}

// The origins of results.
const (
	external = 0
	local    = 1
)

// answered takes the status a host answered with.
func (d *outlierDetector) answered(h *Host, code int) {
	m := &h.od
	m.total[external].Add(1)
	if code < 500 || code > 599 {
		m.success[external].Add(1)
		m.consecutive[ej5xx].Store(0)
		m.consecutive[ejGateway].Store(0)
		return
	}
	if code >= 502 && code <= 504 {
		if m.consecutive[ejGateway].Add(1) == d.cfg.consecutive[ejGateway] {
			d.consecutiveErrors(h, ejGateway)
		}
	} else {
		m.consecutive[ejGateway].Store(0)
	}
	if m.consecutive[ej5xx].Add(1) == d.cfg.consecutive[ej5xx] {
		d.consecutiveErrors(h, ej5xx)
	}
}

// failed takes a local-origin failure: without split, as the status it
// stands for (503 for a connection that failed or broke, 504 for a
// timeout), else in the local-origin counters.
func (d *outlierDetector) failed(h *Host, f Failure) {
	if !d.cfg.split {
		if f == FailTimeout {
			d.answered(h, 504)
		} else {
			d.answered(h, 503)
		}
		return
	}
	m := &h.od
	m.total[local].Add(1)
	if m.consecutive[ejLocal].Add(1) == d.cfg.consecutive[ejLocal] {
		d.consecutiveErrors(h, ejLocal)
	}
}

// connected takes a connection made (counted with split only).
func (d *outlierDetector) connected(h *Host) {
	if !d.cfg.split {
		return
	}
	m := &h.od
	m.total[local].Add(1)
	m.success[local].Add(1)
	m.consecutive[ejLocal].Store(0)
}

// consecutiveErrors ejects h for a run of errors of kind t.
func (d *outlierDetector) consecutiveErrors(h *Host, t int) {
	d.mu.Lock()
	if h.removed.Load() || h.od.ejected.Load() {
		d.mu.Unlock()
		return
	}
	d.det[t].Inc()
	changed := d.eject(h, t, time.Now())
	h.od.consecutive[t].Store(0) // a new run may eject it again later
	d.mu.Unlock()
	if changed {
		d.c.rebuildHosts() // after d.mu: rebuilds take the cluster's lock first
	}
}

// eject ejects h (under d.mu) unless too many are out or the enforcing
// percentage says no; it reports whether h is out now.
func (d *outlierDetector) eject(h *Host, t int, now time.Time) bool {
	hosts := len(d.c.hosts.Load().All)
	if hosts == 0 {
		return false
	}
	active := d.out
	if d.stopped {
		return false
	}
	if !(100*float64(active)/float64(hosts) < d.cfg.maxEjectionPercent || d.cfg.alwaysEjectOne && active == 0) {
		d.over.Inc()
		return false
	}
	if e := d.cfg.enforcing[t]; e < 100 && (e == 0 || rand.Uint32N(100) >= e) {
		return false
	}
	m := &h.od
	m.ejected.Store(true)
	m.ejectedAt = now
	m.ejections++
	if time.Duration(m.backoff)*d.cfg.baseEjection < d.cfg.maxEjection+d.cfg.baseEjection {
		m.backoff++
	}
	m.jitter = 0
	if d.cfg.jitter > 0 {
		m.jitter = rand.N(d.cfg.jitter + 1)
	}
	d.out++
	d.active.Inc()
	d.total.Inc()
	d.enf[t].Inc()
	d.c.log.Info("outlier detection: host ejected", "host", h.Addr, "type", ejectionNames[t], "ejections", m.ejections)
	return true
}

// run checks the hosts every interval until the cluster stops.
func (d *outlierDetector) run() {
	t := time.NewTicker(d.cfg.interval)
	defer t.Stop()
	for {
		select {
		case <-d.c.stopped:
			return
		case now := <-t.C:
			d.interval(now)
		}
	}
}

type hostRate struct {
	h    *Host
	rate float64
}

// interval returns hosts whose time is up, and ejects by success rate
// and failure percentage on the interval's counts.
func (d *outlierDetector) interval(now time.Time) {
	if d.check(now) {
		d.c.rebuildHosts()
	}
}

// check is interval's work under d.mu; it reports a change of the
// ejected hosts.
func (d *outlierDetector) check(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	hosts := d.c.hosts.Load().All
	changed := false
	var vol [2][]uint64
	var rates [2][]float64
	for o := range 2 {
		vol[o], rates[o] = make([]uint64, len(hosts)), make([]float64, len(hosts))
	}
	for i, h := range hosts {
		m := &h.od
		for o := range 2 {
			total, success := m.total[o].Swap(0), m.success[o].Swap(0)
			vol[o][i] = total
			rates[o][i] = -1
			if total > 0 {
				rates[o][i] = 100 * float64(min(success, total)) / float64(total)
			}
		}
		if !m.ejected.Load() {
			if m.backoff > 0 {
				m.backoff--
			}
			continue
		}
		out := min(time.Duration(m.backoff)*d.cfg.baseEjection, d.cfg.maxEjection) + m.jitter
		if now.Sub(m.ejectedAt) >= out {
			m.ejected.Store(false)
			for k := range m.consecutive {
				m.consecutive[k].Store(0)
			}
			d.out--
			d.active.Dec()
			changed = true
			d.c.log.Info("outlier detection: host back", "host", h.Addr)
		}
	}
	origins := 1
	if d.cfg.split {
		origins = 2
	}
	for o := range origins {
		if d.byRate(hosts, vol[o], rates[o], o, now) {
			changed = true
		}
	}
	return changed
}

// byRate ejects by success rate and failure percentage for one origin.
func (d *outlierDetector) byRate(hosts []*Host, vol []uint64, rates []float64, o int, now time.Time) bool {
	cfg := d.cfg
	var sr, fp []hostRate
	sum := 0.0
	for i, h := range hosts {
		if h.od.ejected.Load() || rates[i] < 0 {
			continue
		}
		if vol[i] >= cfg.srVolume {
			sr = append(sr, hostRate{h, rates[i]})
			sum += rates[i]
		}
		if vol[i] >= cfg.fpVolume {
			fp = append(fp, hostRate{h, rates[i]})
		}
	}
	srType, fpType := ejSuccessRate, ejFailurePct
	if o == local {
		srType, fpType = ejSuccessRateLocal, ejFailurePctLocal
	}
	changed := false
	if len(sr) > 0 && uint64(len(sr)) >= cfg.srMinHosts {
		mean := sum / float64(len(sr))
		variance := 0.0
		for _, r := range sr {
			variance += (r.rate - mean) * (r.rate - mean)
		}
		threshold := mean - cfg.srStdevFactor*math.Sqrt(variance/float64(len(sr)))
		for _, r := range sr {
			if r.rate < threshold && !r.h.od.ejected.Load() {
				d.det[srType].Inc()
				changed = d.eject(r.h, srType, now) || changed
			}
		}
	}
	if len(fp) > 0 && uint64(len(fp)) >= cfg.fpMinHosts {
		for _, r := range fp {
			if 100-r.rate >= cfg.fpThreshold && !r.h.od.ejected.Load() {
				d.det[fpType].Inc()
				changed = d.eject(r.h, fpType, now) || changed
			}
		}
	}
	return changed
}

// left forgets a host that left the cluster: an ejected one is no longer
// counted as out.
func (d *outlierDetector) left(h *Host) {
	d.mu.Lock()
	if h.od.ejected.Swap(false) && !d.stopped {
		d.out--
		d.active.Dec()
	}
	d.mu.Unlock()
}

// stop takes this detector's ejections out of the shared gauge: the
// cluster is retired (a new version, if any, has its own detector).
func (d *outlierDetector) stop() {
	d.mu.Lock()
	if !d.stopped {
		d.stopped = true
		d.active.Add(int64(-d.out))
		d.out = 0
	}
	d.mu.Unlock()
}

// Ejected reports whether outlier detection has ejected h.
func (h *Host) Ejected() bool { return h.od.ejected.Load() }

// Answered reports the status the host answered the attempt with to
// outlier detection.
func (a *Attempt) Answered(code int) {
	if a.h != nil {
		if d := a.h.cluster.outlier; d != nil {
			d.answered(a.h, code)
		}
	}
}

// Failed reports a local-origin failure of the attempt to outlier
// detection.
func (a *Attempt) Failed(f Failure) {
	if a.h != nil {
		if d := a.h.cluster.outlier; d != nil {
			d.failed(a.h, f)
		}
	}
}

// Connected reports that the attempt has its connection (or stream).
func (a *Attempt) Connected() {
	if a.h != nil {
		if d := a.h.cluster.outlier; d != nil {
			d.connected(a.h)
		}
	}
}

// ReportConnect reports the outcome of a connection that is the whole
// exchange (a tcp_proxy session's) to outlier detection.
func (h *Host) ReportConnect(ok bool) {
	d := h.cluster.outlier
	switch {
	case d == nil:
	case !ok:
		d.failed(h, FailConnect)
	case d.cfg.split:
		d.connected(h)
	default:
		d.answered(h, 200)
	}
}
