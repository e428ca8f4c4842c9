package freeport

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
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

// Environment of the helper process TestPortsReservedAcrossProcesses starts.
const (
	helperEnv      = "FREEPORT_TEST_HELPER" // "lockDir floor ceiling count"
	helperPortsTag = "ports:"
)

// TestHelperTakesPorts is the other process of TestPortsReservedAcrossProcesses (it does
// nothing in a normal run): it takes ports, prints them and keeps them until its standard
// input closes.
func TestHelperTakesPorts(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("the helper process of TestPortsReservedAcrossProcesses")
	}
	var count int
	if _, err := fmt.Sscan(spec, &lockDir, &floor, &ceiling, &count); err != nil {
		t.Fatal(err)
	}
	var ports []string
	for range count {
		port, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, strconv.Itoa(port))
	}
	fmt.Println(helperPortsTag, strings.Join(ports, " "))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes it
}

// TestPortsReservedAcrossProcesses: a port another running process took (and has not
// bound yet, or not again after a restart) is never handed out; once that process ends,
// it can be.
func TestPortsReservedAcrossProcesses(t *testing.T) {
	const width, each = 16, 8
	// A window of ports nothing listens on, so that only the reservations decide.
	var base int
	for tries := 0; ; tries++ {
		if tries == 100 {
			t.Fatal("no window of free ports found")
		}
		base = lowest + rand.IntN(ephemeralStart()-lowest-width)
		if windowFree(base, width) {
			break
		}
	}
	dir := t.TempDir()
	mu.Lock()
	savedDir, savedFloor, savedCeiling := lockDir, floor, ceiling
	lockDir, floor, ceiling = dir, base, base+width
	mu.Unlock()
	defer func() { mu.Lock(); lockDir, floor, ceiling = savedDir, savedFloor, savedCeiling; mu.Unlock() }()

	helper := exec.Command(os.Args[0], "-test.run=^TestHelperTakesPorts$", "-test.count=1")
	helper.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d %d", helperEnv, dir, base, base+width, each))
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = os.Stderr
	if err = helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = helper.Process.Kill() }() // gone already when the test passes
	theirs := map[int]bool{}
	for sc := bufio.NewScanner(stdout); sc.Scan(); {
		if rest, ok := strings.CutPrefix(sc.Text(), helperPortsTag); ok {
			for _, f := range strings.Fields(rest) {
				port, _ := strconv.Atoi(f)
				theirs[port] = true
			}
			break
		}
	}
	if len(theirs) != each {
		t.Fatalf("the helper process took %v", theirs)
	}
	for range each {
		port, err := Port()
		if err != nil {
			t.Fatal(err)
		}
		if theirs[port] {
			t.Fatalf("port %d handed out while another process holds it (it holds %v)", port, theirs)
		}
	}
	if _, err := Port(); err == nil {
		t.Fatal("a port handed out with every port of the range taken")
	}
	_ = stdin.Close() // the helper ends, and its reservations with it
	if err := helper.Wait(); err != nil {
		t.Fatalf("helper process: %v", err)
	}
	port, err := Port()
	if err != nil {
		t.Fatalf("no port after the other process ended: %v", err)
	}
	if !theirs[port] {
		t.Fatalf("port %d was not the other process's", port)
	}
}

// windowFree reports whether nothing listens on any of the width ports from base.
func windowFree(base, width int) bool {
	for port := base; port < base+width; port++ {
		if given[port] {
			return false
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return false
		}
		_ = l.Close() // only probed
	}
	return true
}
