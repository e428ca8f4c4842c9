// Package freeport hands out loopback TCP addresses for a process to bind later, as the
// test harnesses and devcluster do when they write a component's config before starting it.
//
// An address taken from the kernel with ":0" comes from the ephemeral range, the same
// range the kernel gives every outgoing connection its local port from: between closing
// the probe listener and the component's bind, a connection to Kafka, PostgreSQL or a
// keep-alive HTTP peer can take the port and hold it for minutes, and the component
// cannot start. The ports here are drawn from below the ephemeral range, which the
// kernel never hands to a connection, probed by a bind, and never repeated within a
// process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

const (
	// lowest is the first port handed out: above the well-known and registered ports
	// services on a developer's machine commonly listen on.
	lowest = 10000
	// defaultEphemeralStart is Linux's default start of net.ipv4.ip_local_port_range.
	defaultEphemeralStart = 32768
)

var (
	mu      sync.Mutex
	given   = map[int]bool{}
	ceiling = ephemeralStart()
)

// ephemeralStart is the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeralStart
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return defaultEphemeralStart
	}
	start, err := strconv.Atoi(fields[0])
	if err != nil || start <= lowest+1000 {
		return defaultEphemeralStart
	}
	return start
}

// Port is a loopback port nothing listened on when it was probed and that this process
// has not handed out before.
func Port() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for tries := 0; tries < 1000; tries++ {
		port := lowest + rand.IntN(ceiling-lowest)
		if given[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			return 0, err
		}
		given[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("freeport: no free loopback port below %d after 1000 tries", ceiling)
}

// Addr is Port as a "127.0.0.1:port" address.
func Addr() (string, error) {
	port, err := Port()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}
