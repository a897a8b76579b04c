package observe

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/internal/lifecycle"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/health"
	"github.com/lifeboat-dr/lifeboat/probe"
)

// versionPoller reads the version of every region's endpoint of the
// services that have a version probe, once per health interval.
type versionPoller struct {
	logger *slog.Logger
	jobs   []versionJob

	mu       sync.Mutex
	versions map[string]map[string]health.Version

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type versionJob struct {
	service  string
	interval time.Duration
	timeout  time.Duration
	readers  map[string]*probe.Version // by region
}

func newVersionPoller(cfg *config.Config, client *http.Client, logger *slog.Logger) (*versionPoller, error) {
	vp := &versionPoller{logger: logger, versions: map[string]map[string]health.Version{}}
	for _, s := range cfg.Services {
		if s.Version == nil {
			continue
		}
		job := versionJob{service: s.Name, interval: s.Health.Interval.D(), timeout: s.Health.Timeout.D(), readers: map[string]*probe.Version{}}
		for region, ep := range s.Endpoints {
			r, err := probe.NewVersion(client, ep, region, *s.Version)
			if err != nil {
				return nil, err
			}
			job.readers[region] = r
		}
		vp.jobs = append(vp.jobs, job)
		vp.versions[s.Name] = map[string]health.Version{}
	}
	return vp, nil
}

func (vp *versionPoller) Open() error {
	ctx, cancel := context.WithCancel(context.Background())
	vp.cancel = cancel
	for _, job := range vp.jobs {
		vp.wg.Add(1)
		go func() {
			defer vp.wg.Done()
			vp.loop(ctx, job)
		}()
	}
	return nil
}

func (vp *versionPoller) Close(ctx context.Context) error {
	if vp.cancel != nil {
		vp.cancel()
	}
	return lifecycle.Wait(ctx, &vp.wg)
}

func (vp *versionPoller) loop(ctx context.Context, job versionJob) {
	t := time.NewTicker(job.interval)
	defer t.Stop()
	for {
		vp.pollOnce(ctx, job)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollOnce reads every region's version in parallel, each bounded by the
// service's probe timeout.
func (vp *versionPoller) pollOnce(ctx context.Context, job versionJob) {
	var wg sync.WaitGroup
	for region, r := range job.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, job.timeout)
			defer cancel()
			val, err := r.Fetch(pctx)
			if ctx.Err() != nil {
				return
			}
			vp.mu.Lock()
			prev := vp.versions[job.service][region]
			v := prev
			if err != nil {
				v.Error = err.Error()
			} else {
				v = health.Version{Value: val, Time: time.Now()}
			}
			vp.versions[job.service][region] = v
			vp.mu.Unlock()
			if prev.Value != v.Value && v.Value != "" {
				vp.logger.Info("version observed", "service", job.service, "region", region, "version", v.Value, "previous", prev.Value)
			}
		}()
	}
	wg.Wait()
}

// snapshot copies the latest versions.
func (vp *versionPoller) snapshot() map[string]map[string]health.Version {
	vp.mu.Lock()
	defer vp.mu.Unlock()
	out := make(map[string]map[string]health.Version, len(vp.versions))
	for s, byRegion := range vp.versions {
		m := make(map[string]health.Version, len(byRegion))
		for r, v := range byRegion {
			m[r] = v
		}
		out[s] = m
	}
	return out
}
