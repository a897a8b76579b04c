package runbook

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/observe"
)

// Check is one pre-check of a dry run.
type Check struct {
	What   string `json:"what"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// PreCheck runs a plan's checks without changing anything: the target's
// readiness (check.target steps) and one probe of every endpoint a step
// acts on, reporting its role now.
func PreCheck(ctx context.Context, cfg *config.Config, p *Plan, st observe.Status, lags *LagMemory, client *http.Client) []Check {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	var out []Check
	targets := map[[2]string]bool{}
	for _, s := range p.Steps {
		if s.Action == "check.target" {
			problems, notes, worst := takeover(cfg, st, lags, s.Args["region"])
			c := Check{What: "region " + s.Args["region"] + " ready to take over", OK: len(problems) == 0, Detail: strings.Join(append(problems, notes...), "; ")}
			if !c.OK {
				c.Detail += fmt.Sprintf(" (estimated loss if forced: %s)", config.ByteSize(worst))
			}
			out = append(out, c)
		}
		if svc, region := s.Args["service"], s.Args["region"]; svc != "" && region != "" {
			targets[[2]string{svc, region}] = true
			if p := s.Args["primary"]; p != "" {
				targets[[2]string{svc, p}] = true
			}
		}
	}
	keys := make([][2]string, 0, len(targets))
	for k := range targets {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	checks := make([]Check, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Go(func() {
			c := Check{What: target(cfg, k[0], k[1]) + " reachable"}
			svc, ok := cfg.Service(k[0])
			if !ok {
				c.Detail = "service not declared"
				checks[i] = c
				return
			}
			pr, closeFn, err := observe.NewProber(client, svc, svc.Endpoints[k[1]])
			if err != nil {
				c.Detail = err.Error()
				checks[i] = c
				return
			}
			pctx, cancel := context.WithTimeout(ctx, svc.Health.Timeout.D()*4)
			res := pr.Probe(pctx)
			cancel()
			if closeFn != nil {
				closeFn()
			}
			c.OK = res.Err == nil
			if res.Err != nil {
				c.Detail = cfg.Redact(res.Err.Error())
			} else if res.Role != "" {
				c.Detail = "role " + string(res.Role)
			} else {
				c.Detail = "answers"
			}
			checks[i] = c
		})
	}
	wg.Wait()
	return append(out, checks...)
}
