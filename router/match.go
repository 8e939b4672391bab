package router

import (
	"bytes"
	"fmt"
	"regexp"
	"unsafe"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/straitproxy/strait/config"

	"github.com/straitproxy/strait/protocol"
)

type pathKind uint8

const (
	pathPrefix    pathKind = iota // prefix of the whole :path, query included
	pathExact                     // the path before the query
	pathRegex                     // full match of the path before the query
	pathSeparated                 // prefix ending at "/" or the end of the path
)

// routeMatch is a compiled RouteMatch.
type routeMatch struct {
	kind    pathKind
	value   string
	fold    bool // case_sensitive: false; ignored for regex, as in Envoy
	re      *regexp.Regexp
	headers []headerMatch
	query   []queryMatch
	// fraction is runtime_fraction: the share of matching requests the
	// route takes, the runtime value of runtimeKey over the default.
	fraction   *typev3.FractionalPercent
	runtimeKey string
	rt         *config.Runtime
}

// matches reports whether the request matches; path is its :path and
// random the request's random number (for runtime_fraction).
func (m *routeMatch) matches(h *protocol.Headers, path []byte, random uint64) bool {
	if m.kind == pathPrefix && !m.fold {
		// The common case, kept inline: a case-sensitive prefix.
		if len(path) < len(m.value) || string(path[:len(m.value)]) != m.value {
			return false
		}
	} else if !m.matchPath(path) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].matches(h) {
			return false
		}
	}
	if len(m.query) > 0 {
		q := queryOf(path)
		for i := range m.query {
			if !m.query[i].matches(q) {
				return false
			}
		}
	}
	return m.fraction == nil || m.rt.Snapshot().FeatureEnabled(m.runtimeKey, m.fraction, random)
}

func (m *routeMatch) matchPath(path []byte) bool {
	switch m.kind {
	case pathPrefix:
		return hasPrefix(path, m.value, m.fold)
	case pathExact:
		p := pathOnly(path)
		return len(p) == len(m.value) && hasPrefix(p, m.value, m.fold)
	case pathRegex:
		return m.re.Match(pathOnly(path))
	default:
		p := pathOnly(path)
		return hasPrefix(p, m.value, m.fold) && (len(p) == len(m.value) || p[len(m.value)] == '/')
	}
}

func compileRouteMatch(cfg *routev3.RouteMatch, path string) (routeMatch, error) {
	m := routeMatch{fold: cfg.GetCaseSensitive() != nil && !cfg.GetCaseSensitive().GetValue()}
	switch ps := cfg.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		m.kind, m.value = pathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		m.kind, m.value = pathExact, ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		m.kind, m.value = pathSeparated, ps.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(ps.SafeRegex.GetRegex(), joinPath(path, "safe_regex"))
		if err != nil {
			return m, err
		}
		m.kind, m.re = pathRegex, re
	default:
		return m, fmt.Errorf("%s: no path specifier", path)
	}
	if rf := cfg.GetRuntimeFraction(); rf != nil {
		m.fraction, m.runtimeKey = rf.GetDefaultValue(), rf.GetRuntimeKey()
		if m.fraction == nil {
			m.fraction = &typev3.FractionalPercent{}
		}
	}
	for i, hc := range cfg.GetHeaders() {
		hm, err := compileHeaderMatch(hc, indexPath(path, "headers", i))
		if err != nil {
			return m, err
		}
		m.headers = append(m.headers, hm)
	}
	for i, qc := range cfg.GetQueryParameters() {
		qm, err := compileQueryMatch(qc, indexPath(path, "query_parameters", i))
		if err != nil {
			return m, err
		}
		m.query = append(m.query, qm)
	}
	return m, nil
}

// compileRegex compiles an RE2 pattern anchored at both ends: Envoy's
// safe_regex matchers always match the whole input.
func compileRegex(pattern, path string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(pattern); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return regexp.Compile(`\A(?:` + pattern + `)\z`)
}

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

// stringMatch is a compiled StringMatcher.
type stringMatch struct {
	kind  strKind
	value string
	raw   []byte // value, for bytes.Contains
	fold  bool   // ignore_case; no effect on regex, as in Envoy
	re    *regexp.Regexp
}

func (s *stringMatch) match(v []byte) bool {
	switch s.kind {
	case strExact:
		return len(v) == len(s.value) && hasPrefix(v, s.value, s.fold)
	case strPrefix:
		return hasPrefix(v, s.value, s.fold)
	case strSuffix:
		return len(v) >= len(s.value) && hasPrefix(v[len(v)-len(s.value):], s.value, s.fold)
	case strContains:
		return contains(v, s.raw, s.fold)
	default:
		return s.re.Match(v)
	}
}

func compileStringMatch(cfg *matcherv3.StringMatcher, path string) (stringMatch, error) {
	s := stringMatch{fold: cfg.GetIgnoreCase()}
	switch p := cfg.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.kind, s.value = strExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		s.kind, s.value = strPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		s.kind, s.value = strSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		s.kind, s.value, s.raw = strContains, p.Contains, []byte(p.Contains)
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex.GetRegex(), joinPath(path, "safe_regex"))
		if err != nil {
			return s, err
		}
		s.kind, s.re = strRegex, re
	default:
		return s, fmt.Errorf("%s: no match pattern", path)
	}
	return s, nil
}

// hasPrefix reports whether b starts with s, ASCII-case-insensitively when
// fold is set.
func hasPrefix(b []byte, s string, fold bool) bool {
	if len(b) < len(s) {
		return false
	}
	if !fold {
		return string(b[:len(s)]) == s
	}
	return protocol.EqualFold(b[:len(s)], s)
}

func contains(b, s []byte, fold bool) bool {
	if !fold {
		return bytes.Contains(b, s)
	}
	for i := 0; i+len(s) <= len(b); i++ {
		if bytes.EqualFold(b[i:i+len(s)], s) {
			return true
		}
	}
	return false
}

// pathOnly returns path without its query and fragment.
func pathOnly(path []byte) []byte {
	for i, c := range path {
		if c == '?' || c == '#' {
			return path[:i]
		}
	}
	return path
}

// queryOf returns the query of path: after "?", before "#".
func queryOf(path []byte) []byte {
	i := bytes.IndexByte(path, '?')
	if i < 0 {
		return nil
	}
	q := path[i+1:]
	if j := bytes.IndexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	return q
}

type headerKind uint8

const (
	headerPresent headerKind = iota
	headerString
	headerRange
)

// headerMatch is a compiled HeaderMatcher.
type headerMatch struct {
	name         string
	kind         headerKind
	present      bool // present_match's value
	str          stringMatch
	lo, hi       int64 // range_match, [lo, hi)
	invert       bool
	missingEmpty bool // treat_missing_header_as_empty
}

// matches follows Envoy: a missing header fails every matcher, inverted or
// not, unless treat_missing_header_as_empty; present_match compares presence
// with its value and then honours invert_match.
func (m *headerMatch) matches(h *protocol.Headers) bool {
	v, found := headerValue(h, m.name)
	return m.matchesValue(v, found)
}

// matchesValue matches the header's value (found: the header is there).
func (m *headerMatch) matchesValue(v []byte, found bool) bool {
	if m.kind == headerPresent {
		return (found == m.present) != m.invert
	}
	if !found && !m.missingEmpty {
		return false
	}
	var ok bool
	if m.kind == headerRange {
		n, valid := parseInt64(v)
		ok = valid && n >= m.lo && n < m.hi
	} else {
		ok = m.str.match(v)
	}
	return ok != m.invert
}

// headerValue returns the value of name; several fields of that name are
// joined with "," as Envoy does (which allocates; one field does not).
func headerValue(h *protocol.Headers, name string) ([]byte, bool) {
	var first []byte
	var joined []byte
	n := 0
	for i := 0; i < h.NumSlots(); i++ {
		k, v, live := h.Slot(i)
		if !live || string(k) != name {
			continue
		}
		switch n {
		case 0:
			first = v
		case 1:
			joined = append(append(append(joined, first...), ','), v...)
		default:
			joined = append(append(joined, ','), v...)
		}
		n++
	}
	if n > 1 {
		return joined, true
	}
	return first, n == 1
}

func compileHeaderMatch(cfg *routev3.HeaderMatcher, path string) (headerMatch, error) {
	m := headerMatch{
		name:         reqHeaderName(cfg.GetName()),
		kind:         headerString,
		invert:       cfg.GetInvertMatch(),
		missingEmpty: cfg.GetTreatMissingHeaderAsEmpty(),
	}
	var err error
	switch s := cfg.GetHeaderMatchSpecifier().(type) {
	case nil:
		m.kind, m.present = headerPresent, true
	case *routev3.HeaderMatcher_PresentMatch:
		m.kind, m.present = headerPresent, s.PresentMatch
	case *routev3.HeaderMatcher_RangeMatch:
		m.kind, m.lo, m.hi = headerRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_ExactMatch:
		// The legacy exact_match "" matches any value, as in Envoy.
		m.str = stringMatch{kind: strExact, value: s.ExactMatch}
		if s.ExactMatch == "" {
			m.str.kind = strPrefix
		}
	case *routev3.HeaderMatcher_PrefixMatch:
		m.str = stringMatch{kind: strPrefix, value: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		m.str = stringMatch{kind: strSuffix, value: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		m.str = stringMatch{kind: strContains, value: s.ContainsMatch, raw: []byte(s.ContainsMatch)}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		m.str.kind = strRegex
		m.str.re, err = compileRegex(s.SafeRegexMatch.GetRegex(), joinPath(path, "safe_regex_match"))
	case *routev3.HeaderMatcher_StringMatch:
		m.str, err = compileStringMatch(s.StringMatch, joinPath(path, "string_match"))
	}
	return m, err
}

// parseInt64 parses an optionally signed decimal integer without allocating.
func parseInt64(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg, b = b[0] == '-', b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	switch {
	case neg && n <= 1<<63:
		return int64(-n), true
	case !neg && n < 1<<63:
		return int64(n), true
	}
	return 0, false
}

type queryKind uint8

const (
	queryPresent  queryKind = iota // no specifier: the parameter must be there
	queryPresence                  // present_match: presence must equal present
	queryString
)

// queryMatch is a compiled QueryParameterMatcher.
type queryMatch struct {
	name    string
	kind    queryKind
	present bool
	str     stringMatch
}

// matches reads the first parameter named m.name in the raw query q. Names
// and values are percent-decoded; only a value that holds a "%" allocates.
func (m *queryMatch) matches(q []byte) bool {
	v, found := queryParam(q, m.name)
	switch m.kind {
	case queryPresence:
		return found == m.present
	case queryPresent:
		return found
	}
	if !found {
		return false
	}
	if bytes.IndexByte(v, '%') >= 0 {
		v = percentDecode(v)
	}
	return m.str.match(v)
}

func compileQueryMatch(cfg *routev3.QueryParameterMatcher, path string) (queryMatch, error) {
	m := queryMatch{name: cfg.GetName()}
	var err error
	switch s := cfg.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_PresentMatch:
		m.kind, m.present = queryPresence, s.PresentMatch
	case *routev3.QueryParameterMatcher_StringMatch:
		m.kind = queryString
		m.str, err = compileStringMatch(s.StringMatch, joinPath(path, "string_match"))
	}
	return m, err
}

// queryParam returns the raw value of the first parameter whose decoded name
// is name. A parameter without "=" has the empty value.
func queryParam(q []byte, name string) ([]byte, bool) {
	for len(q) > 0 {
		var item []byte
		if i := bytes.IndexByte(q, '&'); i >= 0 {
			item, q = q[:i], q[i+1:]
		} else {
			item, q = q, nil
		}
		k, v := item, []byte(nil)
		if i := bytes.IndexByte(item, '='); i >= 0 {
			k, v = item[:i], item[i+1:]
		}
		if decodedEqual(k, name) {
			return v, true
		}
	}
	return nil, false
}

// decodedEqual reports whether percent-decoding raw gives s.
func decodedEqual(raw []byte, s string) bool {
	j := 0
	for i := 0; i < len(raw); j++ {
		c := raw[i]
		if b, ok := protocol.PercentByte(raw, i); ok {
			c = b
			i += 3
		} else {
			i++
		}
		if j >= len(s) || s[j] != c {
			return false
		}
	}
	return j == len(s)
}

// percentDecode decodes %XX escapes; malformed escapes are kept as they are
// and "+" is not a space, as in Envoy's query parser.
func percentDecode(raw []byte) []byte {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		if b, ok := protocol.PercentByte(raw, i); ok {
			out = append(out, b)
			i += 3
			continue
		}
		out = append(out, raw[i])
		i++
	}
	return out
}

// StringMatcher is a compiled envoy.type.matcher.v3.StringMatcher for
// matching outside routing (a TLS context's SAN matchers).
type StringMatcher struct{ m stringMatch }

// CompileStringMatcher compiles cfg; path names it in errors.
func CompileStringMatcher(cfg *matcherv3.StringMatcher, path string) (*StringMatcher, error) {
	m, err := compileStringMatch(cfg, path)
	if err != nil {
		return nil, err
	}
	return &StringMatcher{m: m}, nil
}

// Match reports whether v matches.
func (s *StringMatcher) Match(v string) bool {
	// The matcher reads v and keeps nothing: no copy.
	return s.m.match(unsafe.Slice(unsafe.StringData(v), len(v)))
}

// Exact returns the value of an exact matcher and whether it is one.
func (s *StringMatcher) Exact() (string, bool) { return s.m.value, s.m.kind == strExact }

// MatchBytes reports whether v matches.
func (s *StringMatcher) MatchBytes(v []byte) bool { return s.m.match(v) }

// HeaderMatcher is a compiled route HeaderMatcher, for filters that match
// headers as routes do (RBAC).
type HeaderMatcher struct{ m headerMatch }

// CompileHeaderMatcher compiles a HeaderMatcher; errors name path.
func CompileHeaderMatcher(cfg *routev3.HeaderMatcher, path string) (*HeaderMatcher, error) {
	m, err := compileHeaderMatch(cfg, path)
	if err != nil {
		return nil, err
	}
	return &HeaderMatcher{m}, nil
}

// Matches reports whether h matches.
func (m *HeaderMatcher) Matches(h *protocol.Headers) bool { return m.m.matches(h) }

// Name is the (lowercase) header name the matcher reads.
func (m *HeaderMatcher) Name() string { return m.m.name }

// MatchesValue is Matches given the header's value, as HeaderValue
// returns it (a caller may look a header up once for many matchers).
func (m *HeaderMatcher) MatchesValue(v []byte, found bool) bool { return m.m.matchesValue(v, found) }

// HeaderValue is the value of the header name as matchers see it:
// several fields of that name joined with ",", as Envoy does.
func HeaderValue(h *protocol.Headers, name string) ([]byte, bool) { return headerValue(h, name) }

// PathOnly is path without its query and fragment.
func PathOnly(path []byte) []byte { return pathOnly(path) }
