package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/report"
)

func (a *app) reportCommand() *cobra.Command {
	var f clientFlags
	var format, out string
	cmd := &cobra.Command{
		Use:   "report RUN_ID",
		Short: "Print a run's DR report (markdown, JSON or HTML)",
		Long: `Report prints the DR report of a run (failover, switchover, failback, drill):
executive summary, timeline of events (cited by id, [#42]), current service
status, data integrity, impact with the RTO and RPO achieved against the policy,
recommended next steps and an estimated recovery timeline. Every figure is
computed from the run's record and the event stream. The leader writes the
report when the run ends (and again when a drill attaches its measurements);
until then the report is computed on the fly.`,
		Example: `  lifeboat report 20261122-060102.123-a1b2c3
  lifeboat report 20261122-060102.123-a1b2c3 --format html -o report.html`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(report.Formats(), format) {
				return usageError{fmt.Errorf("--format %q: use md, json or html", format)}
			}
			c, err := a.client(f)
			if err != nil {
				return err
			}
			var rep report.Report
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/runs/"+url.PathEscape(args[0])+"/report?format=json", nil, &rep); err != nil {
				return err
			}
			var b bytes.Buffer
			if err := report.Render(&b, &rep, format); err != nil {
				return err
			}
			if out == "" {
				_, err := a.stdout.Write(b.Bytes())
				return err
			}
			if err := os.WriteFile(out, b.Bytes(), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "report of %s written to %s\n", args[0], out)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&format, "format", report.FormatMarkdown, "md, json or html")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the report to this file instead of stdout")
	return cmd
}
