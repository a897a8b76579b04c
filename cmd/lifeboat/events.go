package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/control"
)

func (a *app) eventsCommand() *cobra.Command {
	var (
		server, cfgPath string
		follow, asJSON  bool
		after           uint64
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print the control plane's event stream",
		Long: `Events prints the cluster's append-only event stream, oldest first: verdict
changes of every endpoint as each node saw them, elections, changes of the
active region and epoch, holds. With --follow it keeps printing new events
until interrupted.`,
		Example: `  lifeboat events
  lifeboat events --follow --server http://127.0.0.1:7480
  lifeboat events --after 120 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			base, err := a.statusServer(server, cfgPath)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			for {
				evs, err := fetchEvents(ctx, base, after)
				if err != nil {
					return err
				}
				for _, e := range evs {
					if asJSON {
						b, _ := json.Marshal(e)
						fmt.Fprintln(a.stdout, string(b))
					} else {
						printEvent(a.stdout, e)
					}
					after = e.Seq
				}
				if !follow {
					return nil
				}
				if len(evs) == 0 {
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(500 * time.Millisecond):
					}
				}
			}
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "URL of the node's API (default: from -c, else http://127.0.0.1:7480)")
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "topology file whose api.listen names the node")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	cmd.Flags().Uint64Var(&after, "after", 0, "start after this sequence number")
	return cmd
}

func fetchEvents(ctx context.Context, base string, after uint64) ([]control.Event, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, fmt.Sprintf("%s/api/v1/events?after=%d&limit=500", base, after), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, fmt.Errorf("no answer from %s (is lifeboat serve running?): %w", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/api/v1/events: %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
	}
	var evs []control.Event
	if err := json.Unmarshal(body, &evs); err != nil {
		return nil, fmt.Errorf("%s/api/v1/events: %w", base, err)
	}
	return evs, nil
}

func printEvent(w io.Writer, e control.Event) {
	node := e.Node
	if node == "" {
		node = "-"
	}
	fmt.Fprintf(w, "%6d  %s  %-8s  %-10s  %s\n", e.Seq, e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Type, node, e.Message)
}
