package rbac

import "google.golang.org/protobuf/reflect/protoreflect"

// ruleName is the name of the oneof field set in a Permission or a
// Principal ("metadata", "filter_state", ...).
func ruleName(m protoreflect.Message) string {
	od := m.Descriptor().Oneofs().Get(0)
	if fd := m.WhichOneof(od); fd != nil {
		return string(fd.Name())
	}
	return "this rule"
}
