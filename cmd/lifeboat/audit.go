package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lifeboat-dr/lifeboat/api"
	"github.com/lifeboat-dr/lifeboat/control"
)

func (a *app) auditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify and export the tamper-evident audit trail",
		Long: `The event stream is a hash chain: each entry carries the hash of the one
before it and its own, and the head (last sequence number and hash) is kept
with it, so an entry edited, removed, moved or cut from the end is found.
Every mutating API call (who, from where, what, with what status) is one of
its entries. "audit verify" checks the chain on a node, or an exported
archive offline; "audit export" writes a piece of it as JSONL, with what is
needed to verify it on its own.

Exit status: 0 intact, 1 broken (the first broken entry is named), 2 bad
usage.`,
	}
	cmd.AddCommand(a.auditVerifyCommand(), a.auditExportCommand())
	return cmd
}

func (a *app) auditVerifyCommand() *cobra.Command {
	var (
		f                clientFlags
		file, head, prev string
		asJSON           bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain, on a node or in an exported file",
		Long: `Without --file, asks a node to walk the whole chain (needs an admin token).
With --file, checks an archive written by "audit export" offline, without a
server: every line's hash, the links between lines, the sequence numbers and
the JSON form. --head (the head printed by the export) also finds lines cut
from the end; --prev pins what the first line links to.`,
		Example: `  LIFEBOAT_TOKEN=... lifeboat audit verify --server http://10.0.0.5:7480
  lifeboat audit verify --file audit-2026-03.jsonl --head 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  lifeboat audit verify --file audit.jsonl --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, fl := range []struct{ name, v string }{{"--head", head}, {"--prev", prev}} {
				if fl.v != "" && file == "" {
					return usageError{fmt.Errorf("%s checks an exported file: give it with --file", fl.name)}
				}
				if fl.v != "" && !hashRe.MatchString(fl.v) {
					return usageError{fmt.Errorf("%s %q is not a hash (64 lower-case hex digits)", fl.name, fl.v)}
				}
			}
			var rep control.VerifyReport
			if file != "" {
				r, err := verifyFile(file, prev, head)
				if err != nil {
					return err
				}
				rep = r
			} else {
				c, err := a.client(f)
				if err != nil {
					return err
				}
				if rep, err = c.auditVerify(cmd.Context()); err != nil {
					return err
				}
			}
			if asJSON {
				b, _ := json.MarshalIndent(rep, "", "  ")
				fmt.Fprintln(a.stdout, string(b))
			} else {
				printVerifyReport(a.stdout, rep)
			}
			if !rep.Intact {
				return fmt.Errorf("the audit trail is broken: %s", rep.Broken.Message)
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&file, "file", "", "an archive written by audit export, verified offline")
	cmd.Flags().StringVar(&head, "head", "", "with --file: the hash the last line must have (the export's head)")
	cmd.Flags().StringVar(&prev, "prev", "", "with --file: the hash the first line must link to (the export's prev)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

var hashRe = regexp.MustCompile(`^[0-9a-f]{64}$`)

// verifyFile checks an exported archive offline.
func verifyFile(path, prev, head string) (control.VerifyReport, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return control.VerifyReport{}, usageError{fmt.Errorf("--file %s does not exist", path)}
	}
	if err != nil {
		return control.VerifyReport{}, err
	}
	defer f.Close()
	rep, err := control.VerifyExport(f, prev, head)
	if err != nil {
		return rep, fmt.Errorf("%s: %w", path, err)
	}
	return rep, nil
}

// printVerifyReport prints the summary line and every problem listed.
func printVerifyReport(w io.Writer, rep control.VerifyReport) {
	fmt.Fprintln(w, rep.String())
	if rep.Intact {
		return
	}
	fmt.Fprintln(w, "problems, in stream order:")
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  %s\n", p.Message)
	}
	if more := rep.ProblemCount - len(rep.Problems); more > 0 {
		fmt.Fprintf(w, "  ... and %d more\n", more)
	}
}

// auditVerify asks the node for its VerifyReport (200 intact, 409 broken).
func (c *apiClient) auditVerify(ctx context.Context) (control.VerifyReport, error) {
	var rep control.VerifyReport
	resp, err := c.get(ctx, "/api/v1/audit/verify")
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return rep, fmt.Errorf("GET /api/v1/audit/verify: %w", err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusConflict {
		return rep, answerError(resp, raw)
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		return rep, fmt.Errorf("GET /api/v1/audit/verify: the answer is not a report: %w", err)
	}
	return rep, nil
}

// get sends an authenticated GET and returns the response to read.
func (c *apiClient) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no answer from %s (is lifeboat serve running?): %w", c.base, err)
	}
	return resp, nil
}

// answerError is the error of an error answer, with the API's message.
func answerError(resp *http.Response, raw []byte) error {
	var e api.Error
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	return fmt.Errorf("%s %s: %s: %s", resp.Request.Method, resp.Request.URL.Path, resp.Status, strings.TrimSpace(string(raw)))
}

func (a *app) auditExportCommand() *cobra.Command {
	var (
		f             clientFlags
		since, output string
	)
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the audit trail as JSONL, verifiable on its own",
		Long: `Export writes the event stream from the first entry at or after --since to
the end, one stored entry per line, exactly as stored (needs an admin token).
It prints to stderr how many entries, their sequence numbers, the head (the
last entry's hash) and the prev (what the first entry links to): keep them
apart from the file, and "audit verify --file FILE --head HEAD --prev PREV"
proves later that the file is whole and unchanged.

--since is an RFC 3339 time, a date, or a duration ago (24h, 90m, 7d);
without it, the whole stream.`,
		Example: `  lifeboat audit export --since 24h -o audit.jsonl
  lifeboat audit export --since 2026-03-01T00:00:00Z > march.jsonl
  lifeboat audit export --since 7d --server http://10.0.0.5:7480 --token "$ADMIN_TOKEN"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			c, err := a.client(f)
			if err != nil {
				return err
			}
			path := "/api/v1/audit"
			if !from.IsZero() {
				path += "?since=" + url.QueryEscape(from.UTC().Format(time.RFC3339Nano))
			}
			var sum control.ExportSummary
			if output == "" {
				sum, err = c.auditExport(cmd.Context(), path, a.stdout)
			} else {
				sum, err = exportToFile(output, func(w io.Writer) (control.ExportSummary, error) {
					return c.auditExport(cmd.Context(), path, w)
				})
			}
			if err != nil {
				return err
			}
			if sum.Count == 0 {
				fmt.Fprintln(a.stderr, "exported 0 entries")
				return nil
			}
			fmt.Fprintf(a.stderr, "exported %d entries (seq %d..%d), head %s, prev %s\n", sum.Count, sum.First, sum.Last, sum.Head, noneIfEmpty(sum.Prev))
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&since, "since", "", "from this time: RFC 3339, a date (2026-03-01) or a duration ago (24h, 7d)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to this file (default: stdout)")
	return cmd
}

func noneIfEmpty(h string) string {
	if h == "" {
		return "(none)"
	}
	return h
}

// parseSince reads --since: RFC 3339, a date (midnight UTC), or a
// duration before now (Go syntax, plus whole days as "7d", an optional
// " ago").
func parseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	d := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "ago"))
	if days, ok := strings.CutSuffix(d, "d"); ok {
		if n, err := strconv.ParseUint(days, 10, 16); err == nil {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if dur, err := time.ParseDuration(d); err == nil && dur >= 0 {
		return now.Add(-dur), nil
	}
	return time.Time{}, usageError{fmt.Errorf("--since %q is not an RFC 3339 time (2026-03-01T12:00:00Z), a date (2026-03-01) or a duration ago (24h, 7d)", v)}
}

// exportToFile writes through export into a temporary file next to path,
// renamed to path only when the export is complete: a failed export leaves
// no partial archive behind.
func exportToFile(path string, export func(io.Writer) (control.ExportSummary, error)) (control.ExportSummary, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return control.ExportSummary{}, err
	}
	defer os.Remove(tmp.Name())
	sum, err := export(tmp)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return sum, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return sum, err
	}
	return sum, nil
}

// auditExport streams GET path (the export) into w, byte for byte,
// verifying the chain of what arrives as it goes, and checks that it is
// what the node sent: the count and the ends in its trailers. An archive
// whose chain is broken is still written whole (it is the evidence), and
// reported as an error.
func (c *apiClient) auditExport(ctx context.Context, path string, w io.Writer) (control.ExportSummary, error) {
	var sum control.ExportSummary
	resp, err := c.get(ctx, path)
	if err != nil {
		return sum, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return sum, answerError(resp, raw)
	}
	bw := bufio.NewWriter(w)
	rep, err := control.VerifyExport(io.TeeReader(resp.Body, bw), "", "")
	sum = control.ExportSummary{Count: rep.Checked, First: rep.First, Last: rep.Last, Prev: rep.Prev, Head: rep.Head}
	if ferr := bw.Flush(); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return sum, fmt.Errorf("export: after %d entries: %w", sum.Count, err)
	}
	tr := resp.Trailer
	if msg := tr.Get(api.HeaderAuditError); msg != "" {
		return sum, fmt.Errorf("export stopped on the node after %d entries: %s", sum.Count, msg)
	}
	count := tr.Get(api.HeaderAuditCount)
	if count == "" {
		return sum, fmt.Errorf("export: the answer ended without its trailers after %d entries (connection cut?)", sum.Count)
	}
	if count != strconv.FormatUint(sum.Count, 10) || tr.Get(api.HeaderAuditHead) != sum.Head || tr.Get(api.HeaderAuditPrev) != sum.Prev {
		return sum, fmt.Errorf("export: received %d entries ending with %s; the node sent %s ending with %s", sum.Count, noneIfEmpty(sum.Head), count, noneIfEmpty(tr.Get(api.HeaderAuditHead)))
	}
	if !rep.Intact {
		return sum, fmt.Errorf("exported %d entries, and their chain is broken: %s", sum.Count, rep.Broken.Message)
	}
	return sum, nil
}
