package accesslog

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/stats"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

type hdrs map[string]string

func (h hdrs) Get(name string) ([]byte, bool) {
	v, ok := h[name]
	return []byte(v), ok
}

type conn struct{}

func (conn) RemoteAddr() net.Addr                        { return &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5555} }
func (conn) LocalAddr() net.Addr                         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10000} }
func (conn) TLSState() (cs tls.ConnectionState, ok bool) { return cs, false }

func entry() *Entry {
	return &Entry{
		Start:    time.Date(2026, 12, 4, 18, 2, 3, 123456789, time.UTC),
		Duration: 25 * time.Millisecond, RequestDuration: time.Millisecond, ResponseDuration: 20 * time.Millisecond,
		ResponseTxDuration: Unknown,
		Request: hdrs{":method": "GET", ":path": "/a?b", ":authority": "example.com", "user-agent": "curl/8",
			"x-request-id": "id-1", "x-envoy-original-path": "/orig"},
		Response: hdrs{"x-envoy-upstream-service-time": "19"},
		Protocol: "HTTP/1.1", ResponseCode: 503, ResponseCodeDetails: "upstream_reset_before_response_started{connection_failure}",
		Flags: UpstreamRetryLimitExceeded | UpstreamConnectionFailure, BytesReceived: 3, BytesSent: 91,
		UpstreamHost: "127.0.0.1:8080", UpstreamCluster: "backend", RouteName: "r1", Conn: conn{},
	}
}

func TestDefaultFormat(t *testing.T) {
	f, err := NewText("", false)
	if err != nil {
		t.Fatal(err)
	}
	var tmp []byte
	got := string(f.Append(nil, entry(), &tmp))
	want := `[2026-12-04T18:02:03.123Z] "GET /orig HTTP/1.1" 503 UF,URX 3 91 25 19 "-" "curl/8" "id-1" "example.com" "127.0.0.1:8080"` + "\n"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestOperators(t *testing.T) {
	cases := map[string]string{
		"%REQ(:PATH):2%":                           "/a",
		"%REQ(X-MISSING?:METHOD)%":                 "GET",
		"%RESP(X-NONE)%":                           "-",
		"%TRAILER(GRPC-STATUS)%":                   "-",
		"%RESPONSE_FLAGS_LONG%":                    "UpstreamConnectionFailure,UpstreamRetryLimitExceeded",
		"%RESPONSE_TX_DURATION%":                   "-",
		"%DOWNSTREAM_REMOTE_ADDRESS%":              "10.0.0.1:5555",
		"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%": "10.0.0.1",
		"%DOWNSTREAM_LOCAL_PORT%":                  "10000",
		"%DOWNSTREAM_TLS_VERSION%":                 "-",
		"%START_TIME(%s.%3f)%":                     "1796407323.123",
		"%START_TIME(%Y/%m/%d %E6S %j)%":           "2026/12/04 03.123456 338",
		"%ROUTE_NAME% %UPSTREAM_CLUSTER%":          "r1 backend",
		"100%% %PROTOCOL%":                         "",
	}
	for format, want := range cases {
		f, err := NewText(format, false)
		if want == "" {
			if err == nil {
				t.Errorf("%q: want an error", format)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", format, err)
			continue
		}
		var tmp []byte
		if got := string(f.Append(nil, entry(), &tmp)); got != want {
			t.Errorf("%q: got %q, want %q", format, got, want)
		}
	}
	for _, bad := range []string{"%NOPE%", "%REQ%", "%PROTOCOL(x)%", "%REQ(a", "%START_TIME(%Q)%", "%DURATION:0%", "50%"} {
		if _, err := NewText(bad, false); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestJSONFormat(t *testing.T) {
	s, _ := structpb.NewStruct(map[string]any{
		"code": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%", "missing": "%REQ(X-NONE)%",
		"mixed": "%PROTOCOL% %REQ(X-NONE)%", "n": 1.5, "nested": map[string]any{"host": "%UPSTREAM_HOST%"},
		"quote": "%REQ(USER-AGENT)%\"\\",
	})
	for _, omit := range []bool{false, true} {
		f, err := NewJSON(s, omit)
		if err != nil {
			t.Fatal(err)
		}
		var tmp []byte
		line := f.Append(nil, entry(), &tmp)
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if m["code"] != 503.0 || m["path"] != "/a?b" || m["mixed"] != "HTTP/1.1 -" && !omit || m["n"] != 1.5 ||
			m["quote"] != "curl/8\"\\" || m["nested"].(map[string]any)["host"] != "127.0.0.1:8080" {
			t.Errorf("omit=%v: %s", omit, line)
		}
		if v, ok := m["missing"]; omit == ok || !omit && v != nil {
			t.Errorf("omit=%v: missing value: %s", omit, line)
		}
	}
}

func TestFilters(t *testing.T) {
	rt := config.NewRuntime()
	rt.AddLayer("admin", "admin", nil)
	status := func(op accesslogv3.ComparisonFilter_Op, v uint32, key string) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
			StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{Op: op,
				Value: &corev3.RuntimeUInt32{DefaultValue: v, RuntimeKey: key}}}}}
	}
	flags := func(f ...string) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{
			ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: f}}}
	}
	and := func(fs ...*accesslogv3.AccessLogFilter) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{AndFilter: &accesslogv3.AndFilter{Filters: fs}}}
	}
	not := func(fs ...*accesslogv3.AccessLogFilter) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{Filters: fs}}}
	}
	e := entry()
	for i, c := range []struct {
		f    *accesslogv3.AccessLogFilter
		want bool
	}{
		{status(accesslogv3.ComparisonFilter_GE, 500, ""), true},
		{status(accesslogv3.ComparisonFilter_EQ, 200, ""), false},
		{status(accesslogv3.ComparisonFilter_GE, 600, "k"), false},
		{flags("UF"), true},
		{flags("UH", "NR"), false},
		{flags(), true},
		{and(flags("URX"), status(accesslogv3.ComparisonFilter_LE, 503, "")), true},
		{and(flags("URX"), status(accesslogv3.ComparisonFilter_NE, 503, "")), false},
		{not(flags("NR"), status(accesslogv3.ComparisonFilter_EQ, 503, "")), true},
	} {
		f, err := buildFilter(c.f, rt)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(e); got != c.want {
			t.Errorf("case %d: got %v", i, got)
		}
	}
	// The runtime key overrides the default value.
	f, _ := buildFilter(status(accesslogv3.ComparisonFilter_GE, 600, "k"), rt)
	rt.Modify(map[string]string{"k": "500"})
	if !f.Match(e) {
		t.Error("runtime override not read")
	}
	if _, err := buildFilter(flags("XX"), rt); err == nil || !strings.Contains(err.Error(), "response_flag_filter.flags[0]") {
		t.Errorf("bad flag: %v", err)
	}
}

func TestFileRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	m := NewManager(testStats(stats.NewStore()), time.Hour)
	defer m.Close()
	typed, _ := anypb.New(&filev3.FileAccessLog{Path: path, AccessLogFormat: &filev3.FileAccessLog_LogFormat{
		LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
			TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "%RESPONSE_CODE%\n"}}}}}})
	ls, err := Build(&Context{Files: m}, []*accesslogv3.AccessLog{{Name: "f", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: typed}}})
	if err != nil {
		t.Fatal(err)
	}
	e := entry()
	for i := 0; i < 100; i++ {
		ls.Log(e)
		if i == 49 {
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			m.Reopen(5 * time.Second)
		}
	}
	m.Flush(5 * time.Second)
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if n, k := strings.Count(string(old), "503\n"), strings.Count(string(cur), "503\n"); n != 50 || k != 50 {
		t.Fatalf("rotated %d lines, new file %d; want 50 and 50", n, k)
	}
}

func TestBuildErrorsNamePaths(t *testing.T) {
	m := NewManager(testStats(stats.NewStore()), 0)
	defer m.Close()
	typed, _ := anypb.New(&filev3.FileAccessLog{Path: "/tmp/x.log", AccessLogFormat: &filev3.FileAccessLog_LogFormat{
		LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%BOGUS%"}}}})
	_, err := Build(&Context{Files: m}, []*accesslogv3.AccessLog{{Name: "f", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: typed}}})
	if err == nil || !strings.HasPrefix(err.Error(), "[0].typed_config.log_format.text_format: ") {
		t.Fatalf("got %v", err)
	}
}

func BenchmarkDefaultFormat(b *testing.B) {
	f, _ := NewText("", false)
	e := entry()
	var line, tmp []byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		line = f.Append(line[:0], e, &tmp)
	}
}

// TestStalledSinkDropsLines: a log file nobody drains (a FIFO whose
// reader never reads) never blocks a writer: past the buffer, lines are
// dropped and counted; Close still returns.
func TestStalledSinkDropsLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st := stats.NewStore()
	m := NewManager(testStats(st), 10*time.Millisecond)
	f, err := m.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 1023) + "\n")
	start := time.Now()
	const n = 3 * maxPending / 1024
	// A write that blocked on the stalled pipe would wait for ever; a
	// rare one slowed by the scheduler or a GC pause (-race, a loaded
	// machine: one took 102 ms in CI) is not that.
	slow := 0
	for i := 0; i < n; i++ {
		t0 := time.Now()
		f.Write(line)
		if time.Since(t0) > 100*time.Millisecond {
			slow++
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("%d writes took %v", n, took)
	}
	if slow > 3 {
		t.Errorf("%d writes waited over 100 ms", slow)
	}
	dropped, _ := st.Lookup("filesystem.lines_dropped")
	if dropped < n/2 {
		t.Errorf("dropped %d of %d lines; the pipe holds at most %d", dropped, n, maxPending/1024+64)
	}
	done := make(chan struct{})
	go func() { m.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on the stalled file")
	}
}

// testStats counts in a stats store under filesystem.*.
func testStats(st *stats.Store) Stats {
	fs := st.Root().Scope("filesystem", "", "")
	c := func(i int) *stats.Counter { return fs.Counter(StatNames[i]) }
	return Stats{WriteBuffered: c(0), WriteCompleted: c(1), WriteFailed: c(2), FlushedByTimer: c(3),
		ReopenFailed: c(4), LinesDropped: c(5), TotalBuffered: fs.Gauge(StatNames[6])}
}

// TestLegacyJSONFormatIsStrings: FileAccessLog's deprecated json_format
// renders every value as a string (a missing one "-"), unlike
// typed_json_format.
func TestLegacyJSONFormatIsStrings(t *testing.T) {
	s, _ := structpb.NewStruct(map[string]any{"code": "%RESPONSE_CODE%", "none": "%REQ(X-NONE)%"})
	m := NewManager(Stats{}, time.Hour)
	defer m.Close()
	path := filepath.Join(t.TempDir(), "j.log")
	for _, c := range []struct {
		f    *filev3.FileAccessLog
		want string
	}{
		{&filev3.FileAccessLog{Path: path, AccessLogFormat: &filev3.FileAccessLog_JsonFormat{JsonFormat: s}}, `{"code":"503","none":"-"}` + "\n"},
		{&filev3.FileAccessLog{Path: path, AccessLogFormat: &filev3.FileAccessLog_TypedJsonFormat{TypedJsonFormat: s}}, `{"code":503,"none":null}` + "\n"},
	} {
		_, f, err := buildFile(&Context{Files: m}, c.f)
		if err != nil {
			t.Fatal(err)
		}
		var tmp []byte
		if got := string(f.Append(nil, entry(), &tmp)); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}
