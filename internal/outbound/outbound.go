// Package outbound is the one dialer for connections this server opens to addresses that
// other parties choose: federation (server names in room IDs, aliases, user IDs,
// /publicRooms?server=, key queries), and later remote media, URL previews and push
// gateways. Application services are not dialled through it: they are configured by the
// operator and usually live next to the server.
//
// The check runs in net.Dialer.Control, on the address the connection is about to use,
// after DNS resolution. So every redirect, every SRV or .well-known target and a DNS answer
// that changes between a check and the connection (rebinding) are all covered: no
// connection to a denied network is ever opened.
package outbound

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// DefaultDenyNetworks is global.deny_networks when the key is absent: loopback, RFC 1918,
// CGNAT (RFC 6598), link-local, unique-local, multicast, "this network" and the
// unspecified address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are checked as their
// IPv4 address, so these also cover the mapped forms.
var DefaultDenyNetworks = []string{
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.168.0.0/16", "224.0.0.0/4",
	"::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
}

// ErrDenied is wrapped by the error of every refused connection.
var ErrDenied = errors.New("destination is in a denied network (global.deny_networks)")

// Policy is the set of networks outbound connections must not reach. The zero Policy and a
// nil *Policy deny nothing.
type Policy struct {
	deny []netip.Prefix
}

// NewPolicy parses CIDRs ("10.0.0.0/8", "fe80::/10"); an empty list denies nothing. An
// IPv4-mapped IPv6 prefix (::ffff:10.0.0.0/104) is kept as its IPv4 prefix.
func NewPolicy(cidrs []string) (*Policy, error) {
	p := &Policy{}
	for _, c := range cidrs {
		prefix, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR network: %w", c, err)
		}
		if a := prefix.Addr(); a.Is4In6() && prefix.Bits() >= 96 {
			prefix = netip.PrefixFrom(a.Unmap(), prefix.Bits()-96)
		}
		p.deny = append(p.deny, prefix.Masked())
	}
	return p, nil
}

// Allowed reports whether ip may be connected to.
func (p *Policy) Allowed(ip netip.Addr) bool {
	if p == nil {
		return true
	}
	ip = ip.Unmap().WithZone("")
	for _, n := range p.deny {
		if n.Contains(ip) {
			return false
		}
	}
	return true
}

// control is a net.Dialer.Control refusing denied addresses. address is the resolved
// "ip:port" the dialer is about to connect to.
func (p *Policy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, ErrDenied) // not an IP: never expected, never allowed
	}
	if !p.Allowed(ap.Addr()) {
		return fmt.Errorf("dial %s: %w", address, ErrDenied)
	}
	return nil
}

// Dialer is a dialer that refuses the policy's networks, with the given connect timeout
// and TCP keep-alive period. Use its DialContext as an http.Transport's DialContext, with
// no proxy (a proxy's address would be checked instead of the destination's).
func (p *Policy) Dialer(timeout, keepAlive time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAlive: keepAlive}
	if p != nil && len(p.deny) > 0 {
		d.Control = p.control
	}
	return d
}
