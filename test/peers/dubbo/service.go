package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	hessian "github.com/apache/dubbo-go-hessian2"
	"github.com/dubbogo/gost/log/logger"

	"dubbo.apache.org/dubbo-go/v3/common/constant"
	_ "dubbo.apache.org/dubbo-go/v3/imports"
	"dubbo.apache.org/dubbo-go/v3/protocol"
	"dubbo.apache.org/dubbo-go/v3/remoting/getty"
	"dubbo.apache.org/dubbo-go/v3/server"
)

// User and Address are a nested object argument, registered as Java
// classes as a Java peer would have them.
type User struct {
	ID      int64
	Name    string
	Tags    []string
	Address *Address
}

func (User) JavaClassName() string { return "org.strait.test.User" }

type Address struct {
	City string
	Zip  int32
}

func (Address) JavaClassName() string { return "org.strait.test.Address" }

// maxMsg raises getty's 1 MB frame limit so that 1 MiB arguments pass.
const maxMsg = 8 << 20

func init() {
	hessian.RegisterPOJO(&User{})
	hessian.RegisterPOJO(&Address{})
}

// EchoService is the provider's service.
type EchoService struct{}

func (*EchoService) Reference() string { return Interface }

func (*EchoService) Echo(_ context.Context, s string) (string, error) { return s, nil }

func (*EchoService) Add(_ context.Context, a, b int32) (int32, error) { return a + b, nil }

func (*EchoService) Sum(_ context.Context, xs []int64) (int64, error) {
	var t int64
	for _, x := range xs {
		t += x
	}
	return t, nil
}

// Count answers "n=N sum=S keys=k1,k2,..." for a map of string to long
// (hessian2 decodes an untyped map as map[any]any).
func (*EchoService) Count(_ context.Context, m map[any]any) (string, error) {
	keys := make([]string, 0, len(m))
	var sum int64
	for k, v := range m {
		ks, ok1 := k.(string)
		n, ok2 := v.(int64)
		if !ok1 || !ok2 {
			return "", fmt.Errorf("count: entry %T=%T, want string=long", k, v)
		}
		keys = append(keys, ks)
		sum += n
	}
	sort.Strings(keys)
	return fmt.Sprintf("n=%d sum=%d keys=%s", len(m), sum, strings.Join(keys, ",")), nil
}

// Move returns the user with a new city, one more tag and its id doubled.
func (*EchoService) Move(_ context.Context, u *User, city string) (*User, error) {
	if u == nil || u.Address == nil {
		return nil, errors.New("move: user or address missing")
	}
	out := *u
	out.ID *= 2
	out.Tags = append(append([]string(nil), u.Tags...), "moved")
	out.Address = &Address{City: city, Zip: u.Address.Zip + 1}
	return &out, nil
}

// Fail is a provider exception carrying the caller's message.
func (*EchoService) Fail(_ context.Context, msg string) (string, error) {
	return "", fmt.Errorf("provider refused: %s", msg)
}

// Blob returns its argument reversed.
func (*EchoService) Blob(_ context.Context, b []byte) ([]byte, error) {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out, nil
}

func (*EchoService) Sleep(_ context.Context, ms int64) (string, error) {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return fmt.Sprintf("slept %d", ms), nil
}

func provide(proto string, port int) error {
	popt := protocol.WithDubbo()
	if proto == "tri" {
		popt = protocol.WithTriple()
	}
	sc := getty.GetDefaultServerConfig()
	sc.GettySessionParam.MaxMsgLen = maxMsg
	getty.SetServerConfig(*sc)
	sopts := []protocol.ServerOption{popt, protocol.WithPort(port)}
	if proto == "tri" {
		// (The dubbo protocol's metadata service binds the wildcard
		// address on the same port: a loopback-only main listener would
		// collide with it.)
		sopts = append(sopts, protocol.WithIp("127.0.0.1"))
	}
	srv, err := server.NewServer(server.WithServerProtocol(sopts...))
	if err != nil {
		return err
	}
	logger.SetLoggerLevel("error")
	if proto == "tri" {
		err = srv.RegisterService(&EchoService{}, server.WithInterface(Interface),
			server.WithSerialization(constant.Hessian2Serialization))
	} else {
		err = srv.Register(&EchoService{}, nil, server.WithInterface(Interface))
	}
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-done:
			return fmt.Errorf("serve: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			fmt.Println("ready")
			return <-done
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not accept connections within 30s", addr)
}
