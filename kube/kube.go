// Package kube is Lifeboat's Kubernetes backend for runbooks: it scales
// Deployments and StatefulSets of one cluster (one kube context, which is
// one region) through their scale subresource, and waits for the
// controller to bring the ready replicas to the new count.
//
// Errors name the kube context (when known), the workload as
// kind namespace/name, and what failed; Kubernetes API errors are wrapped,
// so apierrors.IsNotFound and friends see them.
package kube

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

// defaultPollInterval is how often Scale reads the workload while it waits
// for its replicas.
const defaultPollInterval = time.Second

// Scaler scales Deployments and StatefulSets in one cluster (one kube
// context = one region). It holds no state between calls besides its
// client, and is safe for concurrent use.
type Scaler struct {
	cs    kubernetes.Interface
	where string        // kube context name, for messages; "" when unknown
	poll  time.Duration // see defaultPollInterval
}

// New returns a Scaler that uses cs, an existing clientset (tests pass
// client-go's fake clientset, k8s.io/client-go/kubernetes/fake). Its
// errors do not name a kube context.
func New(cs kubernetes.Interface) *Scaler {
	return &Scaler{cs: cs, poll: defaultPollInterval}
}

// FromKubeconfig builds a Scaler for context of the kubeconfig file at path
// (client-go's clientcmd). An empty path uses the default loading rules
// ($KUBECONFIG, else ~/.kube/config); an empty context uses the file's
// current context. It does no I/O to the cluster: a cluster that cannot be
// reached shows on the first Scale.
func FromKubeconfig(path, context string) (*Scaler, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	source := "default kubeconfig ($KUBECONFIG or ~/.kube/config)"
	if path != "" {
		rules.ExplicitPath = path
		source = fmt.Sprintf("kubeconfig %q", path)
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context})
	name := context
	if name == "" {
		raw, err := cc.RawConfig()
		if err != nil {
			return nil, fmt.Errorf("kube: %s: %w", source, err)
		}
		name = raw.CurrentContext
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		if name != "" {
			return nil, fmt.Errorf("kube: %s, context %q: %w", source, name, err)
		}
		return nil, fmt.Errorf("kube: %s: %w", source, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: %s, context %q: client: %w", source, name, err)
	}
	s := New(cs)
	s.where = name
	return s, nil
}

// ScaleResult is what Scale found and did.
type ScaleResult struct {
	// Already is true when the workload had the wanted count of replicas
	// (spec.replicas) before: Scale then changed nothing.
	Already bool
	// From is spec.replicas before, To after.
	From, To int32
	// Ready is status.readyReplicas as last read while waiting; 0 when
	// Scale did not wait.
	Ready int32
}

// Scale sets spec.replicas of the workload of kind ("deployment" or
// "statefulset", case-insensitive; also "deploy", "sts" and the plurals)
// namespace/name to replicas through its scale subresource (GetScale, then
// UpdateScale, again on a conflict). It is idempotent: when the count is
// already replicas it updates nothing and says Already.
//
// When wait is true it then reads the workload every second until the
// controller has seen the new spec (status.observedGeneration), and
// status.readyReplicas equals replicas (with no pod left at all, when
// replicas is 0), or ctx ends; it waits even when Already, so a Scale that
// ran out of time can be retried. The error of a wait that ran out says how
// many replicas were ready, and wraps ctx's error.
func (s *Scaler) Scale(ctx context.Context, kind, namespace, name string, replicas int32, wait bool) (ScaleResult, error) {
	w, err := s.workload(kind)
	if err != nil {
		return ScaleResult{}, err
	}
	ref := fmt.Sprintf("%s %s/%s", w.kind, namespace, name)
	switch {
	case namespace == "":
		return ScaleResult{}, s.errorf("scale %s: namespace is required", ref)
	case name == "":
		return ScaleResult{}, s.errorf("scale %s: name is required", ref)
	case replicas < 0:
		return ScaleResult{}, s.errorf("scale %s: replicas must not be negative, got %d", ref, replicas)
	}

	res := ScaleResult{To: replicas}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sc, err := w.getScale(ctx, namespace, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get scale: %w", err)
		}
		res.From = sc.Spec.Replicas
		if sc.Spec.Replicas == replicas {
			res.Already = true
			return nil
		}
		sc.Spec.Replicas = replicas
		if _, err := w.updateScale(ctx, namespace, name, sc, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update scale from %d to %d replicas: %w", res.From, replicas, err)
		}
		return nil
	})
	if err != nil {
		return ScaleResult{}, s.errorf("scale %s: %w", ref, err)
	}
	if !wait {
		return res, nil
	}
	return s.wait(ctx, w, ref, namespace, name, res)
}

// wait reads the workload until its status says res.To replicas are ready,
// or ctx ends.
func (s *Scaler) wait(ctx context.Context, w workload, ref, namespace, name string, res ScaleResult) (ScaleResult, error) {
	start := time.Now()
	ticker := time.NewTicker(s.poll)
	defer ticker.Stop()
	var last status
	var lastErr error
	for {
		st, err := w.status(ctx, namespace, name)
		switch {
		case err == nil:
			last, lastErr = st, nil
			res.Ready = st.ready
			if st.reached(res.To) {
				return res, nil
			}
		case ctx.Err() != nil:
		case apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
			return res, s.errorf("wait for %s: get: %w", ref, err)
		default: // maybe passing: read again until ctx ends
			lastErr = err
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("wait for %s: %d of %d replicas ready after %v", ref, res.Ready, res.To, time.Since(start).Round(time.Millisecond))
			if res.Ready > res.To {
				msg = fmt.Sprintf("wait for %s: %d replicas ready, want %d, after %v", ref, res.Ready, res.To, time.Since(start).Round(time.Millisecond))
			}
			if why := last.lagging(res.To); why != "" {
				msg += " (" + why + ")"
			}
			if lastErr != nil {
				return res, s.errorf("%s; last read failed: %v: %w", msg, lastErr, ctx.Err())
			}
			return res, s.errorf("%s: %w", msg, ctx.Err())
		case <-ticker.C:
		}
	}
}

// errorf prefixes an error with where it happened: `kube context "eu":`,
// or "kube:" when the context is not known.
func (s *Scaler) errorf(format string, args ...any) error {
	prefix := "kube: "
	if s.where != "" {
		prefix = fmt.Sprintf("kube context %q: ", s.where)
	}
	return fmt.Errorf(prefix+format, args...)
}

// workload is the API of one kind of workload.
type workload struct {
	kind        string // "deployment" or "statefulset", for messages
	getScale    func(context.Context, string, string, metav1.GetOptions) (*autoscalingv1.Scale, error)
	updateScale func(context.Context, string, string, *autoscalingv1.Scale, metav1.UpdateOptions) (*autoscalingv1.Scale, error)
	status      func(ctx context.Context, namespace, name string) (status, error)
}

// workload returns the API of kind, or an error naming the kinds known.
func (s *Scaler) workload(kind string) (workload, error) {
	apps := s.cs.AppsV1()
	switch strings.ToLower(strings.TrimSpace(kind)) {
	case "deployment", "deployments", "deploy":
		return workload{
			kind: "deployment",
			getScale: func(ctx context.Context, ns, name string, o metav1.GetOptions) (*autoscalingv1.Scale, error) {
				return apps.Deployments(ns).GetScale(ctx, name, o)
			},
			updateScale: func(ctx context.Context, ns, name string, sc *autoscalingv1.Scale, o metav1.UpdateOptions) (*autoscalingv1.Scale, error) {
				return apps.Deployments(ns).UpdateScale(ctx, name, sc, o)
			},
			status: func(ctx context.Context, ns, name string) (status, error) {
				d, err := apps.Deployments(ns).Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return status{}, err
				}
				return deploymentStatus(d), nil
			},
		}, nil
	case "statefulset", "statefulsets", "sts":
		return workload{
			kind: "statefulset",
			getScale: func(ctx context.Context, ns, name string, o metav1.GetOptions) (*autoscalingv1.Scale, error) {
				return apps.StatefulSets(ns).GetScale(ctx, name, o)
			},
			updateScale: func(ctx context.Context, ns, name string, sc *autoscalingv1.Scale, o metav1.UpdateOptions) (*autoscalingv1.Scale, error) {
				return apps.StatefulSets(ns).UpdateScale(ctx, name, sc, o)
			},
			status: func(ctx context.Context, ns, name string) (status, error) {
				st, err := apps.StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return status{}, err
				}
				return statefulSetStatus(st), nil
			},
		}, nil
	}
	return workload{}, s.errorf("unknown workload kind %q: want deployment (deploy) or statefulset (sts)", kind)
}

// status is what Scale's wait reads of a workload.
type status struct {
	generation, observed int64 // metadata.generation, status.observedGeneration
	replicas             int32 // status.replicas: pods that exist
	terminating          int32 // status.terminatingReplicas, where the API has it
	ready                int32 // status.readyReplicas
}

func deploymentStatus(d *appsv1.Deployment) status {
	st := status{
		generation: d.Generation,
		observed:   d.Status.ObservedGeneration,
		replicas:   d.Status.Replicas,
		ready:      d.Status.ReadyReplicas,
	}
	if t := d.Status.TerminatingReplicas; t != nil {
		st.terminating = *t
	}
	return st
}

func statefulSetStatus(s *appsv1.StatefulSet) status {
	return status{
		generation: s.Generation,
		observed:   s.Status.ObservedGeneration,
		replicas:   s.Status.Replicas,
		ready:      s.Status.ReadyReplicas,
	}
}

// reached reports whether the controller has brought the workload to want
// ready replicas: it has seen the latest spec, want are ready, and for 0
// no pod is left.
func (st status) reached(want int32) bool {
	return st.lagging(want) == "" && st.ready == want
}

// lagging says why the status does not show want replicas yet, besides
// the ready count; "" when nothing else is missing.
func (st status) lagging(want int32) string {
	switch {
	case st.observed < st.generation:
		return fmt.Sprintf("controller has not seen the new spec: observedGeneration %d < generation %d", st.observed, st.generation)
	case want == 0 && st.replicas+st.terminating > 0:
		return fmt.Sprintf("%d pods left", st.replicas+st.terminating)
	}
	return ""
}
