package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"dubbo.apache.org/dubbo-go/v3/client"
	"dubbo.apache.org/dubbo-go/v3/common/constant"
	"dubbo.apache.org/dubbo-go/v3/remoting/getty"
	"github.com/dubbogo/gost/log/logger"
)

func consume(proto, addr string, timeout time.Duration, in io.Reader, out io.Writer) error {
	copts := []client.ClientOption{client.WithClientProtocolDubbo()}
	ropts := []client.ReferenceOption{client.WithURL("dubbo://" + addr)}
	if proto == "tri" {
		copts = []client.ClientOption{client.WithClientProtocolTriple(),
			client.WithClientSerialization(constant.Hessian2Serialization)}
		ropts = []client.ReferenceOption{client.WithURL("tri://" + addr), client.WithIDL(constant.NONIDL)}
	}
	ropts = append(ropts, client.WithClusterFailFast())
	if timeout > 0 {
		ropts = append(ropts, client.WithRequestTimeout(timeout))
	}
	cc := getty.GetDefaultClientConfig()
	cc.GettySessionParam.MaxMsgLen = maxMsg
	getty.SetClientConf(*cc)
	cli, err := client.NewClient(copts...)
	if err != nil {
		return err
	}
	logger.SetLoggerLevel("error")
	conn, err := cli.Dial(Interface, ropts...)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(out)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		start := time.Now()
		res, bad, err := run(conn, f)
		ms := time.Since(start).Milliseconds()
		switch {
		case err != nil:
			fmt.Fprintf(w, "err %s %d %s\n", f[0], ms, oneLine(err.Error()))
		case bad != "":
			fmt.Fprintf(w, "bad %s %d %s\n", f[0], ms, oneLine(bad))
		default:
			fmt.Fprintf(w, "ok %s %d %s\n", f[0], ms, oneLine(res))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return sc.Err()
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " | ") }

// run makes one call and checks its answer: it returns the answer, or what
// was wrong with it, or the call's error.
func run(conn *client.Connection, f []string) (res, bad string, err error) {
	ctx := context.Background()
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(arg(i), 10, 64); return n }
	switch f[0] {
	case "echo":
		var got string
		if err := conn.CallUnary(ctx, []any{arg(1)}, &got, "Echo"); err != nil {
			return "", "", err
		}
		if got != arg(1) {
			return "", fmt.Sprintf("echo %q, want %q", got, arg(1)), nil
		}
		return got, "", nil
	case "add":
		var got int32
		if err := conn.CallUnary(ctx, []any{int32(num(1)), int32(num(2))}, &got, "Add"); err != nil {
			return "", "", err
		}
		if want := int32(num(1)) + int32(num(2)); got != want {
			return "", fmt.Sprintf("add = %d, want %d", got, want), nil
		}
		return strconv.Itoa(int(got)), "", nil
	case "sum":
		xs := make([]int64, 0, len(f)-1)
		var want int64
		for i := 1; i < len(f); i++ {
			xs = append(xs, num(i))
			want += num(i)
		}
		var got int64
		if err := conn.CallUnary(ctx, []any{xs}, &got, "Sum"); err != nil {
			return "", "", err
		}
		if got != want {
			return "", fmt.Sprintf("sum = %d, want %d", got, want), nil
		}
		return strconv.FormatInt(got, 10), "", nil
	case "map":
		n := int(num(1))
		m := make(map[string]int64, n)
		var sum int64
		keys := make([]string, 0, n)
		for i := 0; i < n; i++ {
			k := fmt.Sprintf("k%03d", i)
			m[k] = int64(i * 10)
			sum += int64(i * 10)
			keys = append(keys, k)
		}
		var got string
		if err := conn.CallUnary(ctx, []any{m}, &got, "Count"); err != nil {
			return "", "", err
		}
		if want := fmt.Sprintf("n=%d sum=%d keys=%s", n, sum, strings.Join(keys, ",")); got != want {
			return "", fmt.Sprintf("count %q, want %q", got, want), nil
		}
		return fmt.Sprintf("n=%d sum=%d", n, sum), "", nil
	case "user":
		u := &User{ID: 21, Name: "Ada", Tags: []string{"a", "b"}, Address: &Address{City: "Hangzhou", Zip: 310000}}
		got := &User{}
		if err := conn.CallUnary(ctx, []any{u, "Shanghai"}, got, "Move"); err != nil {
			return "", "", err
		}
		s := fmt.Sprintf("id=%d name=%s tags=%s city=%s zip=%d", got.ID, got.Name, strings.Join(got.Tags, ","),
			cityOf(got), zipOf(got))
		if want := "id=42 name=Ada tags=a,b,moved city=Shanghai zip=310001"; s != want {
			return "", fmt.Sprintf("move: %s, want %s", s, want), nil
		}
		return s, "", nil
	case "fail":
		var got string
		err := conn.CallUnary(ctx, []any{arg(1)}, &got, "Fail")
		if err == nil {
			return "", fmt.Sprintf("fail returned %q without an error", got), nil
		}
		return "", "", err
	case "blob":
		n := int(num(1))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i/251)
		}
		var got []byte
		if err := conn.CallUnary(ctx, []any{b}, &got, "Blob"); err != nil {
			return "", "", err
		}
		want := make([]byte, n)
		for i, c := range b {
			want[n-1-i] = c
		}
		if !bytes.Equal(got, want) {
			return "", fmt.Sprintf("blob: %d bytes back, not the %d reversed", len(got), n), nil
		}
		return fmt.Sprintf("%d bytes reversed", n), "", nil
	case "sleep":
		var got string
		if err := conn.CallUnary(ctx, []any{num(1)}, &got, "Sleep"); err != nil {
			return "", "", err
		}
		return got, "", nil
	}
	return "", "", fmt.Errorf("unknown command %q", f[0])
}

func cityOf(u *User) string {
	if u.Address == nil {
		return "<nil>"
	}
	return u.Address.City
}

func zipOf(u *User) int32 {
	if u.Address == nil {
		return -1
	}
	return u.Address.Zip
}
