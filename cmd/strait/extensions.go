package main

// The compiled-in extensions are listed once, in package extensions, which
// the end-to-end tests import too.
import _ "github.com/straitproxy/strait/extensions"
