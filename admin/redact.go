package admin

import (
	udpaannotations "github.com/cncf/xds/go/udpa/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// redacted replaces the value of every sensitive field.
const redacted = "[redacted]"

// Redact clears, in place, every field the API marks sensitive
// (udpa.annotations.sensitive: private keys, passwords, secrets), looking
// inside Any values too. String fields and data sources become
// "[redacted]"; other sensitive fields are cleared.
func Redact(m proto.Message) {
	redact(m.ProtoReflect())
}

func redact(m protoreflect.Message) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return
		}
		redact(inner.ProtoReflect())
		if b, err := proto.Marshal(inner); err == nil {
			a.Value = b
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if isSensitive(fd) {
			scrub(m, fd)
			return true
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				redact(l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				redact(mv.Message())
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			redact(v.Message())
		}
		return true
	})
}

func isSensitive(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	v, ok := proto.GetExtension(opts, udpaannotations.E_Sensitive).(bool)
	return ok && v
}

// scrub replaces a sensitive value: strings get the marker; a message
// gets the marker in its string fields (a DataSource's inline_string);
// anything else is cleared.
func scrub(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
	switch {
	case fd.Kind() == protoreflect.StringKind && !fd.IsList() && !fd.IsMap():
		m.Set(fd, protoreflect.ValueOfString(redacted))
	case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
		ds := m.Get(fd).Message()
		m.Clear(fd)
		nm := m.Mutable(fd).Message()
		if f := nm.Descriptor().Fields().ByName("inline_string"); f != nil && ds.IsValid() {
			nm.Set(f, protoreflect.ValueOfString(redacted))
		}
	default:
		m.Clear(fd)
	}
}
