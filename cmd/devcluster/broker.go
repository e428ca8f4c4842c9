package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/matrix-org/dendrite/internal/setup"
)

// broker runs a one-broker Kafka-protocol cluster (franz-go's kfake) on a loopback port
// until SIGTERM or SIGINT: the polylith's log, as a process of its own.
func broker(args []string) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:9092", "loopback address to listen on")
	dataDir := fs.String("data", "", "directory to persist the log in (default: memory only)")
	if err := fs.Parse(setup.NormaliseFlags(args)); err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(*addr)
	if err != nil {
		return err
	}
	if host != "127.0.0.1" && host != "localhost" {
		return fmt.Errorf("--addr %s: kfake listens on 127.0.0.1 only", *addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", *addr, err)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port)}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "kfake broker listening on", c.ListenAddrs())
	<-ctx.Done()
	c.Close()
	return nil
}
