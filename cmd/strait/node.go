package main

import corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

func nodeProto() *corev3.Node { return &corev3.Node{} }
