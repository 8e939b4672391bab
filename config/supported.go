package config

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Support lists, per message, the fields a builder implements. Check
// rejects any other populated field with "<path>: not supported yet", so a
// feature we have not built fails loudly instead of being silently
// ignored; this also covers fields added to the API after a table was
// written.
//
// In a table, a field name prefixed with "-" is accepted and ignored: it
// only decorates (metadata, names) and changes no traffic. Messages the
// table does not list (durations, wrappers, Any, ranges) are leaves and
// are not walked.
type Support map[protoreflect.FullName]map[protoreflect.Name]bool

// NewSupport builds a Support from "message full name" → "field field -ignored".
func NewSupport(table map[string]string) Support {
	s := make(Support, len(table))
	for msg, list := range table {
		use := map[protoreflect.Name]bool{}
		for _, f := range strings.Fields(list) {
			name, ignored := strings.CutPrefix(f, "-")
			use[protoreflect.Name(name)] = !ignored
		}
		s[protoreflect.FullName(msg)] = use
	}
	return s
}

// Check walks the populated fields of m in declaration order and returns a
// *PathError for the first one not in the table.
func (s Support) Check(m proto.Message) error {
	return s.check(m.ProtoReflect(), "")
}

func (s Support) check(m protoreflect.Message, path string) error {
	use, ok := s[m.Descriptor().FullName()]
	if !ok {
		return nil
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		p := joinPath(path, string(fd.Name()))
		walk, known := use[fd.Name()]
		if !known {
			return &PathError{Path: p, Err: fmt.Errorf("not supported yet")}
		}
		if !walk || fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			continue
		}
		if !fd.IsList() {
			if err := s.check(m.Get(fd).Message(), p); err != nil {
				return err
			}
			continue
		}
		list := m.Get(fd).List()
		for j := 0; j < list.Len(); j++ {
			if err := s.check(list.Get(j).Message(), fmt.Sprintf("%s[%d]", p, j)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Missing lists the messages and fields a table names that the linked-in
// API does not have, so that a typo cannot silently allow nothing; each
// package with a table tests that it is empty.
func (s Support) Missing() []string {
	var missing []string
	for msg, use := range s {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(msg)
		md, ok := d.(protoreflect.MessageDescriptor)
		if err != nil || !ok {
			missing = append(missing, string(msg))
			continue
		}
		for f := range use {
			if md.Fields().ByName(f) == nil {
				missing = append(missing, string(msg)+"."+string(f))
			}
		}
	}
	return missing
}
