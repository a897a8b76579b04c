package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/config"
)

func (a *app) statusCommand() *cobra.Command {
	var (
		f       clientFlags
		asJSON  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show regions, services, exposure and readiness from a running node",
		Long: `Status asks a running Lifeboat node (lifeboat serve) for its view and prints it:
each region's state and why, each service's health, role and probe latency in
every region, the exposure of each data service against the RPO, and whether
each standby region could take over now.

The node is --server, or the api.listen of the -c config, or
http://127.0.0.1:7480.`,
		Example: `  lifeboat status
  lifeboat status --server http://10.0.0.5:7480 --json
  lifeboat status -c examples/minimal.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(f)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var raw json.RawMessage
			if err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, &raw); err != nil {
				return err
			}
			var st api.StatusResponse
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("%s/api/v1/status: not a status: %w", c.base, err)
			}
			if asJSON {
				_, err := a.stdout.Write(raw)
				return err
			}
			printStatus(a.stdout, st, time.Now())
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON, as the API returns it")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the node")
	return cmd
}

func (a *app) statusServer(server, cfgPath string) (string, error) {
	switch {
	case server != "":
		u, err := url.Parse(server)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", usageError{fmt.Errorf("--server %q is not an http:// or https:// URL", server)}
		}
		return strings.TrimSuffix(server, "/"), nil
	case cfgPath != "":
		cfg, err := a.loadConfig(cfgPath)
		if err != nil {
			return "", err
		}
		return "http://" + cfg.API.Listen, nil
	}
	return "http://" + config.DefaultAPIListen, nil
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

// printStatus writes the status as tables.
func printStatus(w io.Writer, resp api.StatusResponse, now time.Time) {
	st := resp.Status
	fmt.Fprintf(w, "cluster %s, active region %s, seen by %s at %s\n\n", st.Cluster, st.ActiveRegion, st.Observer, st.Time.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tROLE\tSTATE\tSINCE\tREASON")
	for _, r := range st.Regions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Role, r.State, ago(r.Since, now), r.Reason)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tKIND\tREGION\tHEALTH\tROLE\tLATENCY\tERROR")
	for _, s := range st.Services {
		name := s.Name
		if s.Critical {
			name += "*"
		}
		for _, e := range s.Endpoints {
			role := string(e.Role)
			if role == "" {
				role = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1fms\t%s\n", name, s.Kind, e.Region, e.Health, role, e.LatencyMS, e.Error)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "(* critical)")
	if len(st.Exposure) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "EXPOSURE\tLAG\tBYTES\tRPO\tSTATUS\tSTANDBY\tREASON")
		for _, e := range st.Exposure {
			fmt.Fprintf(tw, "%s\t%.1fs\t%s\t%s\t%s\t%s\t%s\n", e.Service, e.LagSeconds, config.ByteSize(e.LagBytes),
				config.Duration(e.RPOSeconds*float64(time.Second)), e.Status, orDash(e.Standby), e.Reason)
		}
		tw.Flush()
	}
	if t := resp.Traffic; t != nil && len(t.DNS)+len(t.HTTP)+len(t.Postgres) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "traffic: active %s, epoch %d", t.State.Active, t.State.Epoch)
		if t.State.Held {
			fmt.Fprint(w, ", HELD for a switchover")
		}
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENTRY\tSERVICE\tGOES TO\tMODE")
		for _, r := range t.DNS {
			fmt.Fprintf(tw, "dns %s (%s, ttl %ds)\t%s\t%s\t%s\n", r.Name, r.Policy, r.TTL, r.Service, orDash(strings.Join(r.Answers, " ")), r.Mode)
		}
		for _, r := range t.HTTP {
			fmt.Fprintf(tw, "http %s%s\t%s\t%s\t%s\n", orAny(r.Host), r.PathPrefix, r.Service, r.Region, r.Mode)
		}
		for _, p := range t.Postgres {
			carried := fmt.Sprintf("%d relayed", p.Connections)
			if p.NAT {
				carried += ", new ones by the kernel's NAT"
			}
			fmt.Fprintf(tw, "postgres %s %s\t%s\t%s (%s)\tepoch %d\n", p.Role, p.Listen, p.Service, p.Region, carried, p.Epoch)
		}
		tw.Flush()
	}
	if c := resp.Control; c != nil {
		fmt.Fprintln(w)
		leader := c.Leader
		if leader == "" {
			leader = "none"
		}
		quorum := "quorum"
		if !c.Quorum {
			quorum = "NO QUORUM: writes refused"
		}
		fmt.Fprintf(w, "control plane: leader %s, %s (this node: %s)\n", leader, quorum, c.Node)
		for _, m := range c.Members {
			health := "healthy"
			if !m.Healthy {
				health = "UNHEALTHY " + m.Error
			}
			if m.EtcdLeader {
				health += ", etcd leader"
			}
			fmt.Fprintf(w, "  member %s %s %s\n", m.Name, strings.Join(m.ClientURLs, ","), health)
		}
		if c.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", c.Error)
		}
	}
	if len(st.Readiness) > 0 {
		fmt.Fprintln(w)
		for _, r := range st.Readiness {
			if r.Ready {
				fmt.Fprintf(w, "standby %s: ready\n", r.Region)
				continue
			}
			fmt.Fprintf(w, "standby %s: NOT READY\n", r.Region)
			for _, reason := range r.Reasons {
				fmt.Fprintf(w, "  - %s\n", reason)
			}
		}
	}
}

func orAny(host string) string {
	if host == "" {
		return "*"
	}
	return host
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
