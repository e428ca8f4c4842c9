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
//
// Several processes use this package at once (go test runs packages side by side, and
// each devcluster is a process of its own), and a port is free to take again whenever
// nothing listens on it: before its component first binds it, and while the component
// restarts. So a port handed out is also reserved for as long as the process that took
// it runs, by an exclusive lock on a file named after it in a directory every process of
// the same user shares (the kernel drops the lock when the process ends); a port another
// running process reserved is never handed out.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const (
	// lowest is the first port handed out: above the well-known and registered ports
	// services on a developer's machine commonly listen on.
	lowest = 10000
	// defaultEphemeralStart is Linux's default start of net.ipv4.ip_local_port_range.
	defaultEphemeralStart = 32768
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
	// locks reserve the ports handed out; held (and so kept open) until the process ends.
	locks []*os.File
	// Ports are drawn from [floor, ceiling).
	floor   = lowest
	ceiling = ephemeralStart()
	// lockDir holds one lock file per port reserved by some process.
	lockDir = filepath.Join(os.TempDir(), "dendrite-freeport-"+strconv.Itoa(os.Getuid()))
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

// Port is a loopback port nothing listened on when it was probed, that this process has
// not handed out before, and that no other running process took from this package; it
// stays reserved until this process ends.
func Port() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return 0, fmt.Errorf("freeport: %w", err)
	}
	for tries := 0; tries < 1000; tries++ {
		port := floor + rand.IntN(ceiling-floor)
		if given[port] {
			continue
		}
		lock, err := reserve(port)
		if err != nil {
			return 0, err
		}
		if lock == nil {
			continue // another running process has it
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			_ = lock.Close() // something else listens there; the port is not ours
			continue
		}
		if err := l.Close(); err != nil {
			_ = lock.Close() // not handed out
			return 0, err
		}
		given[port] = true
		locks = append(locks, lock)
		return port, nil
	}
	return 0, fmt.Errorf("freeport: no free loopback port in [%d, %d) after 1000 tries", floor, ceiling)
}

// reserve locks port's file for this process: nil when another process holds the lock.
func reserve(port int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(lockDir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("freeport: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close() // not ours
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, fmt.Errorf("freeport: lock port %d: %w", port, err)
	}
	return f, nil
}

// Addr is Port as a "127.0.0.1:port" address.
func Addr() (string, error) {
	port, err := Port()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}
