package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPortsAreBelowEphemeralRangeBindableAndDistinct(t *testing.T) {
	seen := map[int]bool{}
	for i := 0; i < 200; i++ {
		port, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if port < lowest || port >= ephemeralStart() {
			t.Fatalf("port %d outside [%d, %d)", port, lowest, ephemeralStart())
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
	}
	addr, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("bind %s: %v", addr, err)
	}
	defer l.Close() // nolint: errcheck
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	if seen[port] {
		t.Fatalf("Addr repeated port %d", port)
	}
}

func TestPortSkipsAPortSomethingListensOn(t *testing.T) {
	// Occupy every candidate but a handful: what Port returns must be one of the free ones.
	held := map[int]net.Listener{}
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	mu.Lock()
	saved := ceiling
	ceiling = lowest + 64
	mu.Unlock()
	defer func() { mu.Lock(); ceiling = saved; mu.Unlock() }()
	free := map[int]bool{}
	for port := lowest; port < lowest+64; port++ {
		if len(free) < 4 && !given[port] {
			free[port] = true
			continue
		}
		if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			held[port] = l
		}
	}
	port, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	if _, busy := held[port]; busy {
		t.Fatalf("Port returned %d, which a listener holds", port)
	}
}
