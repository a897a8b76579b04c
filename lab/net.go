package lab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// run runs a command to its end and returns an error with its output.
func run(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// createNetwork makes the lab's network: namespaces, or the links of a
// loopback lab.
func (l *Lab) createNetwork(ctx context.Context) error {
	if l.Net == NetNS {
		return createNamespaces(ctx, &l.Spec)
	}
	if err := l.daemon(Region{Name: "lab"}, "links", "", l.Binary, "lab", "links", "--dir", l.Dir); err != nil {
		return err
	}
	if err := waitTCP(ctx, l.linksAPI()); err != nil {
		return fmt.Errorf("the lab's links did not start: %w", err)
	}
	return nil
}

// createNamespaces makes the bridge in the root namespace and, per region,
// a namespace joined to it by a veth pair; the region's side delays what
// it sends by half the round trip, so two regions are latency apart.
func createNamespaces(ctx context.Context, s *Spec) error {
	steps := [][]string{
		{"ip", "link", "add", s.Bridge, "type", "bridge"},
		{"ip", "addr", "add", s.Subnet + ".254/24", "dev", s.Bridge},
		{"ip", "link", "set", s.Bridge, "up"},
	}
	for _, r := range s.Regions {
		steps = append(steps,
			[]string{"ip", "netns", "add", r.NS},
			[]string{"ip", "link", "add", r.Veth, "type", "veth", "peer", "name", "eth0", "netns", r.NS},
			[]string{"ip", "link", "set", r.Veth, "master", s.Bridge, "up"},
			[]string{"ip", "-n", r.NS, "addr", "add", r.IP + "/24", "dev", "eth0"},
			[]string{"ip", "-n", r.NS, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", r.NS, "link", "set", "lo", "up"},
			[]string{"ip", "-n", r.NS, "route", "add", "default", "via", s.Subnet + ".254"},
		)
	}
	for _, st := range steps {
		if err := run(ctx, st[0], st[1:]...); err != nil {
			return err
		}
	}
	if s.LatencyMS > 0 && !netemWorks(ctx) {
		// Some kernels (gVisor sandboxes, kernels without sch_netem) have
		// no netem: the lab runs without added latency and says so.
		s.Notes = append(s.Notes, fmt.Sprintf("netem is not available in this kernel: regions are not %dms apart (no added latency)", s.LatencyMS))
		s.LatencyMS = 0
	}
	for _, r := range s.Regions {
		if s.LatencyMS > 0 {
			half := fmt.Sprintf("%dus", s.LatencyMS*1000/2)
			if err := run(ctx, "ip", "netns", "exec", r.NS, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", half); err != nil {
				return err
			}
		}
	}
	return nil
}

// netemWorks tries a netem qdisc on a veth pair of its own (root only).
func netemWorks(ctx context.Context) bool {
	dev := "lbnetem" + randomHex(3)
	if run(ctx, "ip", "link", "add", dev, "type", "veth", "peer", "name", dev+"p") != nil {
		return false
	}
	defer run(ctx, "ip", "link", "del", dev)
	return run(ctx, "tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms") == nil
}

// deleteNetwork removes what createNetwork made; missing pieces are fine.
func deleteNetwork(ctx context.Context, s *Spec) {
	for _, r := range s.Regions {
		run(ctx, "ip", "link", "del", r.Veth)
		run(ctx, "ip", "netns", "del", r.NS)
	}
	run(ctx, "ip", "link", "del", s.Bridge)
}

// setLink brings a region's link up or down (a network partition).
func setLink(ctx context.Context, r Region, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return run(ctx, "ip", "link", "set", r.Veth, state)
}
