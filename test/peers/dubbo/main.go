// Command dubbo-peer is a real dubbo-go v3 provider and consumer for
// Strait's end-to-end tests. It lives in its own module so that dubbo-go's
// few hundred modules never enter Strait's.
//
//	dubbo-peer provider -protocol dubbo|tri -port N
//	dubbo-peer consumer -protocol dubbo|tri -addr HOST:PORT [-timeout D]
//
// The provider exports org.strait.test.EchoService and serves until
// killed; it prints "ready" on stdout once its port accepts connections.
// The consumer reads one command per line on stdin, makes the call, checks
// the answer itself and prints one line per command:
//
//	ok CMD MILLIS RESULT    the call succeeded and its answer is right
//	bad CMD MILLIS DETAIL   the call succeeded with a wrong answer
//	err CMD MILLIS ERROR    the call failed (ERROR is the consumer's error)
//
// Commands: echo S; add A B; sum N...; map N; user; fail MSG; blob N;
// sleep MS.
package main

import (
	"flag"
	"fmt"
	"os"
)

// Interface is the Dubbo service name both sides use.
const Interface = "org.strait.test.EchoService"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dubbo-peer provider|consumer [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	proto := fs.String("protocol", "dubbo", "dubbo or tri")
	port := fs.Int("port", 20880, "provider: port to listen on (127.0.0.1)")
	addr := fs.String("addr", "", "consumer: HOST:PORT to call")
	timeout := fs.Duration("timeout", 0, "consumer: request timeout (0: dubbo-go's default)")
	_ = fs.Parse(os.Args[2:])
	if *proto != "dubbo" && *proto != "tri" {
		fmt.Fprintln(os.Stderr, "dubbo-peer: -protocol must be dubbo or tri")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "provider":
		err = provide(*proto, *port)
	case "consumer":
		if *addr == "" {
			err = fmt.Errorf("consumer needs -addr")
			break
		}
		err = consume(*proto, *addr, *timeout, os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dubbo-peer:", err)
		os.Exit(1)
	}
}
