package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/control"
)

func (a *app) eventsCommand() *cobra.Command {
	var (
		f              clientFlags
		follow, asJSON bool
		after          uint64
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
			c, err := a.client(f)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			for {
				var evs []control.Event
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := c.do(rctx, http.MethodGet, fmt.Sprintf("/api/v1/events?after=%d&limit=500", after), nil, &evs)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
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
	f.add(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	cmd.Flags().Uint64Var(&after, "after", 0, "start after this sequence number")
	return cmd
}

func printEvent(w io.Writer, e control.Event) {
	node := e.Node
	if node == "" {
		node = "-"
	}
	fmt.Fprintf(w, "%6d  %s  %-8s  %-10s  %s\n", e.Seq, e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Type, node, e.Message)
}
