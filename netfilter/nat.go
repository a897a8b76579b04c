// Package netfilter makes the kernel's NAT (nftables) carry a Postgres
// writer endpoint's connections straight to the current primary, as
// kube-proxy and IPVS carry a service's: once the first packet is
// translated, the connection costs what a direct one does, with no relay
// in its path.
//
// Lifeboat keeps its guarantees with three rules per endpoint, rewritten
// together in one nftables transaction whenever the routing changes:
//
//   - new connections to the endpoint are translated to the target, and
//     their conntrack entry is marked with the epoch, only while the
//     endpoint admits (no hold, a confirmed quorum, a target not down) and
//     only while the process renews its lease (an element with a timeout
//     in a set: a process that dies or freezes stops renewing it, and its
//     endpoints stop translating within Lease);
//   - a packet of a translated connection marked with another epoch or by
//     another (earlier) process, or of any translated connection when the
//     endpoint keeps none (no quorum), is answered with a TCP reset: the
//     kernel's equivalent of the relay closing the connection; once the
//     lease has lapsed, the table resets the connections it translated,
//     and only those (the mark carries the table's id), so a dead
//     process's table never touches its successor's connections;
//   - when the endpoint does not admit, new connections reach the
//     endpoint's own listener, which holds, refuses or relays them.
//
// A reset reaches the side that sends the next packet: an idle client
// learns of it when it next sends, and a server whose client never sends
// again keeps its session until its TCP keepalive or its own timeouts
// (idle_in_transaction_session_timeout) end it. Closing the table
// (a graceful stop) leaves the connections translated earlier to run
// until they end, as direct connections would; a change of primary ends
// them on the server (the fence).
//
// Only IPv4 endpoints listening on one address are translated, and only
// when the endpoint and its target are both loopback or both not (the
// kernel drops loopback packets that leave the host). Connections from
// other hosts are translated only to a target on this host (forwarding
// them elsewhere would need this host to route and masquerade); others
// reach the listener. The table is named lifeboat_<pid>_<random>; conntrack
// marks of the translated connections are Lifeboat's.
package netfilter

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Lease is how long the rules translate new connections after the process
// last renewed them; they are renewed every Lease/6.
const Lease = 3 * time.Second

// Route is where the kernel sends one endpoint's connections.
type Route struct {
	// Target receives the endpoint's new connections while Admit is set.
	Target netip.AddrPort
	Admit  bool
	// Epoch marks the connections translated; those translated under
	// another epoch are reset, and all of them when Keep is not set.
	Epoch uint64
	Keep  bool
}

// ErrUnsupported says the kernel cannot translate an endpoint's
// connections to its target; they reach the endpoint's listener.
var ErrUnsupported = errors.New("the kernel cannot translate this endpoint's connections")

// NAT is one process's table of translations.
type NAT struct {
	conn  *nftables.Conn
	table *nftables.Table
	live  *nftables.Set
	// endpoints lists the routed endpoints, for the process that adopts
	// the table once this one has exited.
	endpoints *nftables.Set
	chains    map[string]*nftables.Chain

	// id tells this table's translated connections from others' in
	// their conntrack mark (random, not zero).
	id     uint16
	logger *slog.Logger

	mu     sync.Mutex
	routes map[netip.AddrPort]Route
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

// Chains of the table: translation, then the resets where packets enter,
// leave and cross the host.
const (
	chainNATOut  = "nat_output"
	chainNATPre  = "nat_prerouting"
	chainOut     = "reset_output"
	chainIn      = "reset_input"
	chainForward = "reset_forward"
	setLive      = "live"
	setEndpoints = "endpoints"
)

// Open creates the process's table (root, or CAP_NET_ADMIN) and starts
// renewing its lease; a renewal that fails is logged (the translations
// stop when the lease lapses, and the endpoints' listeners take over).
func Open(logger *slog.Logger) (*NAT, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("netfilter: %w", err)
	}
	var suffix [4]byte
	rand.Read(suffix[:])
	n := &NAT{conn: conn, chains: map[string]*nftables.Chain{}, routes: map[netip.AddrPort]Route{}, id: binary.BigEndian.Uint16(suffix[:2]) | 1, logger: logger,
		stop: make(chan struct{}), done: make(chan struct{})}
	n.table = conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: fmt.Sprintf("lifeboat_%d_%s", os.Getpid(), hex.EncodeToString(suffix[:]))})
	for _, c := range []struct {
		name     string
		typ      nftables.ChainType
		hook     *nftables.ChainHook
		priority *nftables.ChainPriority
	}{
		{chainNATOut, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest},
		{chainNATPre, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest},
		{chainOut, nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter},
		{chainIn, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter},
		{chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter},
	} {
		n.chains[c.name] = conn.AddChain(&nftables.Chain{Name: c.name, Table: n.table, Type: c.typ, Hooknum: c.hook, Priority: c.priority})
	}
	n.live = &nftables.Set{Table: n.table, Name: setLive, KeyType: nftables.TypeInetService, HasTimeout: true}
	n.endpoints = &nftables.Set{Table: n.table, Name: setEndpoints, KeyType: endpointType, Concatenation: true}
	for _, set := range []*nftables.Set{n.live, n.endpoints} {
		if err := conn.AddSet(set, nil); err != nil {
			conn.CloseLasting()
			return nil, fmt.Errorf("netfilter: %w", err)
		}
	}
	if err := conn.Flush(); err != nil {
		conn.CloseLasting()
		return nil, fmt.Errorf("netfilter: create table %s: %w", n.table.Name, err)
	}
	go n.renew()
	return n, nil
}

// Table is the name of the process's table.
func (n *NAT) Table() string { return n.table.Name }

// adoptOrphans deletes the tables of processes that have exited once this
// process routes every endpoint such a table routed: the dead process's
// table keeps resetting the connections it translated until then (its
// lease has lapsed), and this process's rules reset those of another
// epoch from then on, as they match connections by their endpoint, not by
// who translated them. Called with n.mu held.
func (n *NAT) adoptOrphans() {
	_, _ = removeOrphans(n.conn, n.table.Name, func(l netip.AddrPort) bool {
		_, ok := n.routes[l]
		return ok
	})
}

// RemoveOrphans deletes the tables left by exited processes whose
// endpoints all satisfy gone (no process will route them again, as when
// a lab is taken down): the connections those processes translated are
// no longer reset. living counts the tables whose endpoints are all gone
// but whose process has not exited yet (one just killed may take a
// moment).
func RemoveOrphans(gone func(netip.AddrPort) bool) (living int, err error) {
	conn, err := nftables.New()
	if err != nil {
		return 0, fmt.Errorf("netfilter: %w", err)
	}
	return removeOrphans(conn, "", gone)
}

// exited says whether process pid has exited (a zombie has).
func exited(pid int) bool {
	if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return os.IsNotExist(err)
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	return i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X')
}

// removeOrphans deletes the tables (but skip) of exited processes whose
// endpoints all satisfy owned. Processes are looked up in this process's
// PID namespace: nodes sharing a network namespace must share that too.
func removeOrphans(conn *nftables.Conn, skip string, owned func(netip.AddrPort) bool) (living int, err error) {
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return 0, fmt.Errorf("netfilter: %w", err)
	}
	deleted := false
	for _, t := range tables {
		var pid int
		var rest string
		if !strings.HasPrefix(t.Name, "lifeboat_") || t.Name == skip {
			continue
		}
		if _, err := fmt.Sscanf(strings.ReplaceAll(t.Name, "_", " "), "lifeboat %d %s", &pid, &rest); err != nil || pid <= 0 {
			continue
		}
		els, err := conn.GetSetElements(&nftables.Set{Table: t, Name: setEndpoints, KeyType: endpointType, Concatenation: true})
		if err != nil {
			continue
		}
		all := true
		for _, e := range els {
			all = all && owned(endpointFromKey(e.Key))
		}
		switch {
		case !all:
		case !exited(pid):
			living++
		default:
			conn.DelTable(t)
			deleted = true
		}
	}
	if !deleted {
		return living, nil
	}
	if err := conn.Flush(); err != nil {
		return living, fmt.Errorf("netfilter: delete tables of exited processes: %w", err)
	}
	return living, nil
}

// endpointType is the key of the endpoints set: address . port.
var endpointType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)

func endpointKey(l netip.AddrPort) []byte {
	k := make([]byte, 8)
	copy(k, ip4(l.Addr()))
	copy(k[4:], port(l))
	return k
}

func endpointFromKey(k []byte) netip.AddrPort {
	if len(k) < 6 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(k[:4])), binary.BigEndian.Uint16(k[4:6]))
}

// Set installs listen's route (replacing the previous one). A pair the
// kernel cannot translate is installed without admitting (its older
// connections are still reset as the route says) and reported as
// ErrUnsupported.
func (n *NAT) Set(listen netip.AddrPort, r Route) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("netfilter: table %s is closed", n.table.Name)
	}
	var unsupported error
	if r.Admit {
		if unsupported = supported(listen, r.Target); unsupported != nil {
			r.Admit = false
		}
	}
	if !listen.Addr().Is4() || listen.Addr().IsUnspecified() {
		return fmt.Errorf("%w: %s is not one IPv4 address", ErrUnsupported, listen)
	}
	prev, had := n.routes[listen]
	if had && prev == r {
		// Nothing to rewrite: the router calls on every change of
		// state or of any verdict, most of which leave the route as is.
		return unsupported
	}
	n.routes[listen] = r
	if err := n.apply(); err != nil {
		if had {
			n.routes[listen] = prev
		} else {
			delete(n.routes, listen)
		}
		return err
	}
	return unsupported
}

// Delete stops translating listen's connections: new ones reach the
// listener, and those translated earlier are reset.
func (n *NAT) Delete(listen netip.AddrPort) error {
	return n.Set(listen, Route{})
}

// supported says whether the kernel can translate listen's connections to
// target.
func supported(listen, target netip.AddrPort) error {
	switch {
	case !target.IsValid() || !target.Addr().Is4():
		return fmt.Errorf("%w: the target %s is not an IPv4 address", ErrUnsupported, target)
	case listen.Addr().IsLoopback() != target.Addr().IsLoopback():
		return fmt.Errorf("%w: %s and %s are not both loopback or both not", ErrUnsupported, listen, target)
	}
	return nil
}

// apply rewrites every chain from n.routes in one transaction and renews
// the lease. Called with n.mu held.
func (n *NAT) apply() error {
	for _, c := range n.chains {
		n.conn.FlushChain(c)
	}
	listens := make([]netip.AddrPort, 0, len(n.routes))
	for l := range n.routes {
		listens = append(listens, l)
	}
	sort.Slice(listens, func(i, j int) bool { return listens[i].Compare(listens[j]) < 0 })
	for _, l := range listens {
		r := n.routes[l]
		if r.Admit {
			n.add(chainNATOut, n.translate(l, r))
			if isLocal(r.Target.Addr()) && !r.Target.Addr().IsLoopback() {
				n.add(chainNATPre, n.translate(l, r))
			}
		}
		for _, c := range []string{chainOut, chainIn, chainForward} {
			n.add(c, n.reset(l, r))
			n.add(c, n.lapsed(l))
		}
	}
	n.renewElements()
	n.conn.FlushSet(n.endpoints)
	var els []nftables.SetElement
	for _, l := range listens {
		els = append(els, nftables.SetElement{Key: endpointKey(l)})
	}
	if len(els) > 0 {
		n.conn.SetAddElements(n.endpoints, els)
	}
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("netfilter: table %s: %w", n.table.Name, err)
	}
	n.adoptOrphans()
	return nil
}

func (n *NAT) add(chain string, exprs []expr.Any) {
	n.conn.AddRule(&nftables.Rule{Table: n.table, Chain: n.chains[chain], Exprs: exprs})
}

// renewElements queues the lease's renewal: each routed port's element
// again with a full timeout. Called with n.mu held.
func (n *NAT) renewElements() {
	n.conn.FlushSet(n.live)
	var els []nftables.SetElement
	for l := range n.routes {
		els = append(els, nftables.SetElement{Key: port(l), Timeout: Lease})
	}
	if len(els) > 0 {
		n.conn.SetAddElements(n.live, els)
	}
}

func (n *NAT) renew() {
	defer close(n.done)
	t := time.NewTicker(Lease / 6)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.mu.Lock()
		if len(n.routes) > 0 {
			n.renewElements()
			err := n.conn.Flush()
			if (err != nil) != failing {
				if err != nil {
					n.logger.Warn("netfilter: renewing the lease failed: the kernel stops translating when it lapses", "table", n.table.Name, "lease", Lease, "err", err)
				} else {
					n.logger.Info("netfilter: the lease is renewed again", "table", n.table.Name)
				}
			}
			failing = err != nil
		}
		n.mu.Unlock()
	}
}

// Close removes the table: new connections reach the listeners (closed by
// then), and connections translated earlier keep their translation until
// they end (the server's fence ends them on a change of primary).
func (n *NAT) Close(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	close(n.stop)
	<-n.done // a renewal in flight is one netlink round trip
	n.mu.Lock()
	defer n.mu.Unlock()
	n.conn.DelTable(n.table)
	err := n.conn.Flush()
	n.conn.CloseLasting()
	if err != nil {
		return fmt.Errorf("netfilter: delete table %s: %w", n.table.Name, err)
	}
	return nil
}

// Registers: the 16-byte ones.
const (
	reg1 = 1
	reg2 = 2
)

// ipsDstNAT is conntrack's status bit of a translated destination.
const ipsDstNAT = 1 << 5

func port(a netip.AddrPort) []byte { return binaryutil.BigEndian.PutUint16(a.Port()) }

func ip4(a netip.Addr) []byte { b := a.As4(); return b[:] }

// mark is the conntrack mark of the connections this table translates
// under epoch: the table's id in the high 16 bits, the epoch's low 16
// bits below (marks are only compared for equality).
func (n *NAT) mark(epoch uint64) []byte {
	return binaryutil.NativeEndian.PutUint32(uint32(n.id)<<16 | uint32(epoch&0xffff))
}

// toEndpoint matches a TCP packet addressed to l (before translation).
func toEndpoint(l netip.AddrPort) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ip4(l.Addr())},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: port(l)},
	}
}

// live matches while l's lease holds (or, inverted, once it has lapsed).
func live(l netip.AddrPort, lapsed bool) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: port(l)},
		&expr.Lookup{SourceRegister: reg1, SetName: setLive, Invert: lapsed},
	}
}

// translate: ip daddr L tcp dport P, lease live → ct mark set the
// table's mark of the epoch, dnat to T.
func (n *NAT) translate(l netip.AddrPort, r Route) []expr.Any {
	e := toEndpoint(l)
	e = append(e, live(l, false)...)
	return append(e,
		&expr.Immediate{Register: reg1, Data: n.mark(r.Epoch)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1, SourceRegister: true},
		&expr.Immediate{Register: reg1, Data: ip4(r.Target.Addr())},
		&expr.Immediate{Register: reg2, Data: port(r.Target)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg2, Specified: true},
	)
}

// translated matches a TCP packet of a connection translated for l.
func translated(l netip.AddrPort) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		// Established, not related: the reset the kernel sends is
		// related to the connection and must pass.
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
		&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
		&expr.Ct{Key: expr.CtKeyDST, Direction: 0, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ip4(l.Addr())},
		&expr.Ct{Key: expr.CtKeyPROTODST, Direction: 0, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: port(l)},
	}
}

// reset answers with a TCP reset a packet of a connection translated for
// l that the route no longer keeps, while the lease holds: one of another
// epoch or of another (earlier, dead) process's table, or any without
// Keep. A dead process's rules thus never touch the connections of the
// process that routes l after it.
func (n *NAT) reset(l netip.AddrPort, r Route) []expr.Any {
	e := append(translated(l), live(l, false)...)
	if r.Keep {
		e = append(e,
			&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: n.mark(r.Epoch)},
		)
	}
	return append(e, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
}

// lapsed resets every connection this table translated for l once the
// lease has lapsed (the process died or froze), and only those.
func (n *NAT) lapsed(l netip.AddrPort) []expr.Any {
	return append(append(translated(l), live(l, true)...),
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(0xffff0000), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(uint32(n.id) << 16)},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
	)
}

// isLocal says whether a is an address of this host.
func isLocal(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if p, ok := x.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}
