package accesslog

import (
	"fmt"
	"os"
	"sync"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"github.com/straitproxy/strait/config"
	"google.golang.org/protobuf/proto"
)

// Logger writes entries.
type Logger interface {
	Log(e *Entry)
}

// Loggers is an access_log list; a nil Loggers logs nothing.
type Loggers []Logger

// Log gives e to each logger.
func (ls Loggers) Log(e *Entry) {
	for _, l := range ls {
		l.Log(e)
	}
}

// Context is what building access loggers needs.
type Context struct {
	// Files opens log files (nil: file loggers are refused).
	Files   *Manager
	Runtime *config.Runtime
}

// Factory builds an access logger extension's sink and formatter from
// its decoded typed_config.
type Factory func(ctx *Context, msg proto.Message) (Sink, *Formatter, error)

// The access loggers this package provides.
const (
	FileName   = "envoy.access_loggers.file"
	StdoutName = "envoy.access_loggers.stdout"
	StderrName = "envoy.access_loggers.stderr"
)

func init() {
	for _, e := range []struct {
		name string
		msg  proto.Message
		f    Factory
	}{
		{FileName, &filev3.FileAccessLog{}, buildFile},
		{StdoutName, &streamv3.StdoutAccessLog{}, buildStd("/dev/stdout")},
		{StderrName, &streamv3.StderrAccessLog{}, buildStd("/dev/stderr")},
	} {
		config.Register(config.Extension{Kind: config.AccessLogger, Name: e.name,
			TypeURL: "type.googleapis.com/" + string(e.msg.ProtoReflect().Descriptor().FullName()), Factory: e.f})
	}
}

var supported = config.NewSupport(map[string]string{
	"envoy.config.accesslog.v3.AccessLog": `-name filter typed_config`,
	"envoy.config.accesslog.v3.AccessLogFilter": `status_code_filter duration_filter not_health_check_filter
		runtime_filter and_filter or_filter response_flag_filter`,
	"envoy.config.accesslog.v3.StatusCodeFilter":     `comparison`,
	"envoy.config.accesslog.v3.DurationFilter":       `comparison`,
	"envoy.config.accesslog.v3.ComparisonFilter":     `op value`,
	"envoy.config.core.v3.RuntimeUInt32":             `default_value runtime_key`,
	"envoy.config.accesslog.v3.RuntimeFilter":        `runtime_key percent_sampled use_independent_randomness`,
	"envoy.type.v3.FractionalPercent":                `numerator denominator`,
	"envoy.config.accesslog.v3.AndFilter":            `filters`,
	"envoy.config.accesslog.v3.OrFilter":             `filters`,
	"envoy.config.accesslog.v3.ResponseFlagFilter":   `flags`,
	"envoy.config.accesslog.v3.NotHealthCheckFilter": ``,
	"envoy.extensions.access_loggers.file.v3.FileAccessLog": `path format json_format typed_json_format
		log_format`,
	"envoy.extensions.access_loggers.stream.v3.StdoutAccessLog": `log_format`,
	"envoy.extensions.access_loggers.stream.v3.StderrAccessLog": `log_format`,
	"envoy.config.core.v3.SubstitutionFormatString": `text_format json_format text_format_source
		omit_empty_values json_format_options`,
	"envoy.config.core.v3.JsonFormatOptions": `sort_properties`,
	"envoy.config.core.v3.DataSource":        `filename inline_string inline_bytes environment_variable`,
})

// Build compiles an access_log list. Errors name the field under the
// list ("[0].typed_config.path: ..."): the caller puts them at its
// access_log.
func Build(ctx *Context, logs []*accesslogv3.AccessLog) (Loggers, error) {
	if len(logs) == 0 {
		return nil, nil
	}
	out := make(Loggers, 0, len(logs))
	for i, al := range logs {
		l, err := buildOne(ctx, al)
		if err != nil {
			return nil, config.At(fmt.Sprintf("[%d]", i), err)
		}
		out = append(out, l)
	}
	return out, nil
}

func buildOne(ctx *Context, al *accesslogv3.AccessLog) (Logger, error) {
	if err := supported.Check(al); err != nil {
		return nil, err
	}
	ext, msg, err := config.Decode(config.AccessLogger, al.GetTypedConfig())
	if err != nil {
		return nil, err
	}
	if err := supported.Check(msg); err != nil {
		return nil, config.At("typed_config", err)
	}
	sink, f, err := ext.Factory.(Factory)(ctx, msg)
	if err != nil {
		return nil, config.At("typed_config", err)
	}
	l := &logger{f: f, sink: sink}
	if al.GetFilter() != nil {
		if l.filter, err = buildFilter(al.GetFilter(), ctx.Runtime); err != nil {
			return nil, config.At("filter", err)
		}
	}
	return l, nil
}

func buildFile(ctx *Context, msg proto.Message) (Sink, *Formatter, error) {
	m := msg.(*filev3.FileAccessLog)
	var f *Formatter
	var err error
	switch {
	case m.GetLogFormat() != nil:
		f, err = substitution(m.GetLogFormat())
		err = config.At("log_format", err)
	case m.GetJsonFormat() != nil:
		f, err = NewJSON(m.GetJsonFormat(), false)
		if f != nil {
			f.allStrings = true // "All values are rendered as strings"
		}
		err = config.At("json_format", err)
	case m.GetTypedJsonFormat() != nil:
		f, err = NewJSON(m.GetTypedJsonFormat(), false)
		err = config.At("typed_json_format", err)
	default:
		f, err = NewText(m.GetFormat(), false)
		err = config.At("format", err)
	}
	if err != nil {
		return nil, nil, err
	}
	if ctx == nil || ctx.Files == nil {
		return nil, nil, config.At("path", fmt.Errorf("file access logs are not available here"))
	}
	file, err := ctx.Files.Open(m.GetPath())
	if err != nil {
		return nil, nil, config.At("path", err)
	}
	return file, f, nil
}

func buildStd(path string) Factory {
	return func(ctx *Context, msg proto.Message) (Sink, *Formatter, error) {
		lf := msg.(interface {
			GetLogFormat() *corev3.SubstitutionFormatString
		}).GetLogFormat()
		f, err := NewText("", false)
		if lf != nil {
			f, err = substitution(lf)
		}
		if err != nil {
			return nil, nil, config.At("log_format", err)
		}
		if ctx == nil || ctx.Files == nil {
			return nil, nil, fmt.Errorf("access logs are not available here")
		}
		file, err := ctx.Files.Open(path)
		return file, f, err
	}
}

// substitution compiles a SubstitutionFormatString.
func substitution(s *corev3.SubstitutionFormatString) (*Formatter, error) {
	omit := s.GetOmitEmptyValues()
	switch {
	case s.GetJsonFormat() != nil:
		return NewJSON(s.GetJsonFormat(), omit)
	case s.GetTextFormatSource() != nil:
		text, err := dataSource(s.GetTextFormatSource())
		if err != nil {
			return nil, config.At("text_format_source", err)
		}
		f, err := NewText(text, omit)
		return f, config.At("text_format_source", err)
	}
	f, err := NewText(s.GetTextFormat(), omit)
	return f, config.At("text_format", err)
}

func dataSource(ds *corev3.DataSource) (string, error) {
	switch sp := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		return sp.InlineString, nil
	case *corev3.DataSource_InlineBytes:
		return string(sp.InlineBytes), nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(sp.Filename)
		return string(b), config.At("filename", err)
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(sp.EnvironmentVariable)
		if !ok {
			return "", config.At("environment_variable", fmt.Errorf("%s is not set", sp.EnvironmentVariable))
		}
		return v, nil
	}
	return "", fmt.Errorf("empty data source")
}

// logger is one access_log entry: filter, format and sink.
type logger struct {
	filter Filter
	f      *Formatter
	sink   Sink
}

type lineBuf struct{ line, tmp []byte }

var linePool = sync.Pool{New: func() any { return &lineBuf{line: make([]byte, 0, 512)} }}

func (l *logger) Log(e *Entry) {
	if l.filter != nil && !l.filter.Match(e) {
		return
	}
	lb := linePool.Get().(*lineBuf)
	lb.line = l.f.Append(lb.line[:0], e, &lb.tmp)
	l.sink.Write(lb.line)
	if cap(lb.line) <= 64<<10 {
		linePool.Put(lb)
	}
}
