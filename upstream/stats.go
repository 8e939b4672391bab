package upstream

import "github.com/straitproxy/strait/stats"

// ClusterStats are one cluster's counters, named as Envoy names them
// ("cluster.<name>.upstream_rq_total").
type ClusterStats struct {
	CxTotal, CxConnectFail, CxConnectTimeout, CxOverflow, CxDestroy, CxNoneHealthy *stats.Counter
	CxActive                                                                       *stats.Gauge
	RqTotal, RqPendingTotal, RqPendingOverflow, RqRetry, RqRetrySuccess            *stats.Counter
	RqRetryOverflow, RqTimeout, RqPerTryTimeout, RqRxReset, RqOverflow             *stats.Counter
	RqPerTryIdleTimeout, UpdateEmpty, RqTxReset, RqStaleRetry                      *stats.Counter
	LBHealthyPanic                                                                 *stats.Counter
	RqActive, RqPendingActive, MembershipTotal, MembershipHealthy                  *stats.Gauge
	RqClass                                                                        [6]*stats.Counter // [1..5] = 1xx..5xx
	RqTime                                                                         *stats.Histogram
	// CxConnectMs is the time to establish a connection (TCP, and TLS
	// when the cluster has it).
	CxConnectMs *stats.Histogram
}

func newClusterStats(sc *stats.Scope) *ClusterStats {
	s := &ClusterStats{
		CxTotal: sc.Counter("upstream_cx_total"), CxConnectFail: sc.Counter("upstream_cx_connect_fail"),
		CxConnectTimeout: sc.Counter("upstream_cx_connect_timeout"), CxOverflow: sc.Counter("upstream_cx_overflow"),
		CxDestroy: sc.Counter("upstream_cx_destroy"), CxNoneHealthy: sc.Counter("upstream_cx_none_healthy"),
		CxActive: sc.Gauge("upstream_cx_active"),
		RqTotal:  sc.Counter("upstream_rq_total"), RqPendingTotal: sc.Counter("upstream_rq_pending_total"),
		RqPendingOverflow: sc.Counter("upstream_rq_pending_overflow"), RqRetry: sc.Counter("upstream_rq_retry"),
		RqRetrySuccess: sc.Counter("upstream_rq_retry_success"), RqRetryOverflow: sc.Counter("upstream_rq_retry_overflow"),
		RqTimeout: sc.Counter("upstream_rq_timeout"), RqPerTryTimeout: sc.Counter("upstream_rq_per_try_timeout"),
		RqPerTryIdleTimeout: sc.Counter("upstream_rq_per_try_idle_timeout"), UpdateEmpty: sc.Counter("update_empty"),
		RqRxReset: sc.Counter("upstream_rq_rx_reset"), RqOverflow: sc.Counter("upstream_rq_overflow"),
		RqTxReset: sc.Counter("upstream_rq_tx_reset"), RqStaleRetry: sc.Counter("upstream_rq_stale_retry"),
		LBHealthyPanic: sc.Counter("lb_healthy_panic"),
		RqActive:       sc.Gauge("upstream_rq_active"), RqPendingActive: sc.Gauge("upstream_rq_pending_active"),
		MembershipTotal: sc.Gauge("membership_total"), MembershipHealthy: sc.Gauge("membership_healthy"),
		RqTime: sc.Histogram("upstream_rq_time"), CxConnectMs: sc.Histogram("upstream_cx_connect_ms"),
	}
	for i := 1; i <= 5; i++ {
		s.RqClass[i] = sc.Counter("upstream_rq_" + string(rune('0'+i)) + "xx")
	}
	return s
}

// CountStatus counts a response code in its class.
func (s *ClusterStats) CountStatus(code int) {
	if c := code / 100; c >= 1 && c <= 5 {
		s.RqClass[c].Inc()
	}
}
