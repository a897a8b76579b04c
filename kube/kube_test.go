package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"
)

var (
	deploymentsGVR  = appsv1.SchemeGroupVersion.WithResource("deployments")
	statefulSetsGVR = appsv1.SchemeGroupVersion.WithResource("statefulsets")
)

func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
		Spec:       appsv1.DeploymentSpec{Replicas: &replicas},
		Status:     appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: replicas, ReadyReplicas: replicas},
	}
}

func statefulSet(ns, name string, replicas int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
		Spec:       appsv1.StatefulSetSpec{Replicas: &replicas},
		Status:     appsv1.StatefulSetStatus{ObservedGeneration: 1, Replicas: replicas, ReadyReplicas: replicas},
	}
}

// newFake returns a fake clientset holding objs that serves the scale
// subresource, and a Scaler on it that polls every 5ms.
//
// The fake's own object tracker does not implement the scale subresource:
// GetScale hands back the whole Deployment, and the generated client
// panics converting it to a Scale; UpdateScale stores the Scale in place of
// the Deployment (kubernetes/kubernetes#92195, kubernetes/client-go#1077).
// The reactors here do what the API server does: read and write
// spec.replicas of the tracked object, bumping metadata.generation.
func newFake(t *testing.T, objs ...runtime.Object) (*fake.Clientset, *Scaler) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	for _, gvr := range []schema.GroupVersionResource{deploymentsGVR, statefulSetsGVR} {
		cs.PrependReactor("get", gvr.Resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
			get := a.(k8stesting.GetAction)
			if get.GetSubresource() != "scale" {
				return false, nil, nil
			}
			obj, err := cs.Tracker().Get(gvr, get.GetNamespace(), get.GetName())
			if err != nil {
				return true, nil, err
			}
			return true, scaleOf(t, obj), nil
		})
		cs.PrependReactor("update", gvr.Resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
			update := a.(k8stesting.UpdateAction)
			if update.GetSubresource() != "scale" {
				return false, nil, nil
			}
			sc := update.GetObject().(*autoscalingv1.Scale)
			obj, err := cs.Tracker().Get(gvr, update.GetNamespace(), sc.Name)
			if err != nil {
				return true, nil, err
			}
			if rv := scaleOf(t, obj).ResourceVersion; sc.ResourceVersion != rv {
				return true, nil, apierrors.NewConflict(gvr.GroupResource(), sc.Name, fmt.Errorf("resourceVersion %q, object has %q", sc.ResourceVersion, rv))
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				o.Spec.Replicas = &sc.Spec.Replicas
				o.Generation++
			case *appsv1.StatefulSet:
				o.Spec.Replicas = &sc.Spec.Replicas
				o.Generation++
			}
			if err := cs.Tracker().Update(gvr, obj, update.GetNamespace()); err != nil {
				return true, nil, err
			}
			obj, err = cs.Tracker().Get(gvr, update.GetNamespace(), sc.Name)
			if err != nil {
				return true, nil, err
			}
			return true, scaleOf(t, obj), nil
		})
	}
	s := New(cs)
	s.poll = 5 * time.Millisecond
	return cs, s
}

// scaleOf is the scale subresource of a tracked Deployment or StatefulSet.
func scaleOf(t *testing.T, obj runtime.Object) *autoscalingv1.Scale {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &autoscalingv1.Scale{
			ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, ResourceVersion: o.ResourceVersion},
			Spec:       autoscalingv1.ScaleSpec{Replicas: *o.Spec.Replicas},
			Status:     autoscalingv1.ScaleStatus{Replicas: o.Status.Replicas},
		}
	case *appsv1.StatefulSet:
		return &autoscalingv1.Scale{
			ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, ResourceVersion: o.ResourceVersion},
			Spec:       autoscalingv1.ScaleSpec{Replicas: *o.Spec.Replicas},
			Status:     autoscalingv1.ScaleStatus{Replicas: o.Status.Replicas},
		}
	}
	t.Errorf("scale of a %T", obj)
	return nil
}

// runController makes the fake act as the workload controllers: each read
// of a Deployment or StatefulSet first moves its status one pod towards
// spec.replicas and records the generation seen.
func runController(cs *fake.Clientset) {
	for _, gvr := range []schema.GroupVersionResource{deploymentsGVR, statefulSetsGVR} {
		cs.PrependReactor("get", gvr.Resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
			get := a.(k8stesting.GetAction)
			if get.GetSubresource() != "" {
				return false, nil, nil
			}
			obj, err := cs.Tracker().Get(gvr, get.GetNamespace(), get.GetName())
			if err != nil {
				return false, nil, nil
			}
			step := func(n, want int32) int32 {
				switch {
				case n < want:
					return n + 1
				case n > want:
					return n - 1
				}
				return n
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				o.Status.ObservedGeneration = o.Generation
				o.Status.Replicas = step(o.Status.Replicas, *o.Spec.Replicas)
				o.Status.ReadyReplicas = o.Status.Replicas
			case *appsv1.StatefulSet:
				o.Status.ObservedGeneration = o.Generation
				o.Status.Replicas = step(o.Status.Replicas, *o.Spec.Replicas)
				o.Status.ReadyReplicas = o.Status.Replicas
			}
			if err := cs.Tracker().Update(gvr, obj, get.GetNamespace()); err != nil {
				return true, nil, err
			}
			return false, nil, nil // the tracker serves the updated object
		})
	}
}

func specReplicas(t *testing.T, cs *fake.Clientset, kind, ns, name string) int32 {
	t.Helper()
	var r *int32
	switch kind {
	case "deployment":
		d, err := cs.AppsV1().Deployments(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r = d.Spec.Replicas
	case "statefulset":
		s, err := cs.AppsV1().StatefulSets(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r = s.Spec.Replicas
	}
	if r == nil {
		t.Fatalf("%s %s/%s has no spec.replicas", kind, ns, name)
	}
	return *r
}

// updates counts the scale updates the fake received.
func updates(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "scale" {
			n++
		}
	}
	return n
}

func TestScale(t *testing.T) {
	tests := []struct {
		name     string
		kind     string // as the caller writes it
		stored   string // "deployment" or "statefulset"
		from, to int32
	}{
		{"deployment up from 0", "deployment", "deployment", 0, 3},
		{"statefulset down to 0", "statefulset", "statefulset", 2, 0},
		{"deploy alias", "Deploy", "deployment", 1, 2},
		{"sts alias", "STS", "statefulset", 3, 1},
		{"plural", "statefulsets", "statefulset", 1, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var obj runtime.Object = deployment("prod", "api", tt.from)
			if tt.stored == "statefulset" {
				obj = statefulSet("prod", "api", tt.from)
			}
			cs, s := newFake(t, obj)

			res, err := s.Scale(t.Context(), tt.kind, "prod", "api", tt.to, false)
			if err != nil {
				t.Fatalf("Scale: %v", err)
			}
			if want := (ScaleResult{Already: false, From: tt.from, To: tt.to}); res != want {
				t.Errorf("Scale = %+v, want %+v", res, want)
			}
			if got := specReplicas(t, cs, tt.stored, "prod", "api"); got != tt.to {
				t.Errorf("spec.replicas = %d, want %d", got, tt.to)
			}

			res, err = s.Scale(t.Context(), tt.kind, "prod", "api", tt.to, false)
			if err != nil {
				t.Fatalf("second Scale: %v", err)
			}
			if want := (ScaleResult{Already: true, From: tt.to, To: tt.to}); res != want {
				t.Errorf("second Scale = %+v, want %+v", res, want)
			}
			if n := updates(cs); n != 1 {
				t.Errorf("%d scale updates, want 1 (the second Scale changes nothing)", n)
			}
		})
	}
}

func TestScaleWait(t *testing.T) {
	for _, tt := range []struct {
		name     string
		obj      runtime.Object
		kind     string
		from, to int32
	}{
		{"deployment up", deployment("prod", "api", 0), "deployment", 0, 3},
		{"statefulset down", statefulSet("prod", "db", 2), "statefulset", 2, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs, s := newFake(t, tt.obj)
			runController(cs)
			name := tt.obj.(metav1.Object).GetName()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			res, err := s.Scale(ctx, tt.kind, "prod", name, tt.to, true)
			if err != nil {
				t.Fatalf("Scale: %v", err)
			}
			if want := (ScaleResult{From: tt.from, To: tt.to, Ready: tt.to}); res != want {
				t.Errorf("Scale = %+v, want %+v", res, want)
			}
			// The controller moves one pod per read: the wait read more
			// than once, so it did not stop at the first status.
			gets := 0
			for _, a := range cs.Actions() {
				if a.GetVerb() == "get" && a.GetSubresource() == "" {
					gets++
				}
			}
			if want := int(max(tt.from, tt.to) - min(tt.from, tt.to)); gets < want {
				t.Errorf("%d reads of the %s while waiting, want at least %d", gets, tt.kind, want)
			}
		})
	}
}

func TestScaleWaitAlready(t *testing.T) {
	d := deployment("prod", "api", 3)
	d.Status.ReadyReplicas = 1 // spec says 3; two pods not ready yet
	cs, s := newFake(t, d)
	runController(cs)
	res, err := s.Scale(t.Context(), "deployment", "prod", "api", 3, true)
	if err != nil {
		t.Fatalf("Scale: %v", err)
	}
	if want := (ScaleResult{Already: true, From: 3, To: 3, Ready: 3}); res != want {
		t.Errorf("Scale = %+v, want %+v (waits even when Already)", res, want)
	}
}

func TestScaleWaitTimeout(t *testing.T) {
	_, s := newFake(t, deployment("prod", "api", 0)) // no controller: nothing gets ready
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := s.Scale(ctx, "deployment", "prod", "api", 3, true)
	if err == nil {
		t.Fatal("Scale with no controller succeeded")
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Scale took %v with a 100ms deadline", elapsed)
	}
	t.Logf("Scale: %v", err)
	msg := err.Error()
	if !strings.Contains(msg, "wait for deployment prod/api: 0 of 3 replicas ready after") {
		t.Errorf("error %q does not say 0 of 3 replicas are ready", msg)
	}
	if !strings.Contains(msg, "controller has not seen the new spec") {
		t.Errorf("error %q does not say the controller has not seen the new spec", msg)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q does not wrap context.DeadlineExceeded", msg)
	}
	if want := (ScaleResult{From: 0, To: 3, Ready: 0}); res != want {
		t.Errorf("result = %+v, want %+v (the scale itself happened)", res, want)
	}
}

func TestStatusReached(t *testing.T) {
	for _, tt := range []struct {
		name    string
		st      status
		want    int32
		reached bool
		lagging string
	}{
		{"ready", status{generation: 2, observed: 2, replicas: 3, ready: 3}, 3, true, ""},
		{"not all ready", status{generation: 2, observed: 2, replicas: 3, ready: 2}, 3, false, ""},
		{"stale status", status{generation: 3, observed: 2, replicas: 3, ready: 3}, 3, false, "controller has not seen the new spec: observedGeneration 2 < generation 3"},
		{"down to 0", status{generation: 2, observed: 2}, 0, true, ""},
		{"pods left, not ready", status{generation: 2, observed: 2, replicas: 2}, 0, false, "2 pods left"},
		{"pods terminating", status{generation: 2, observed: 2, terminating: 1}, 0, false, "1 pods left"},
		{"more ready than wanted", status{generation: 2, observed: 2, replicas: 3, ready: 3}, 1, false, ""},
	} {
		if got := tt.st.reached(tt.want); got != tt.reached {
			t.Errorf("%s: reached(%d) = %v, want %v", tt.name, tt.want, got, tt.reached)
		}
		if got := tt.st.lagging(tt.want); got != tt.lagging {
			t.Errorf("%s: lagging(%d) = %q, want %q", tt.name, tt.want, got, tt.lagging)
		}
	}
}

func TestScaleNotFound(t *testing.T) {
	_, s := newFake(t, deployment("prod", "api", 1))
	for _, tt := range []struct{ kind, ns, name string }{
		{"deployment", "prod", "missing"},
		{"deployment", "staging", "api"},
		{"statefulset", "prod", "api"},
	} {
		_, err := s.Scale(t.Context(), tt.kind, tt.ns, tt.name, 2, false)
		if err == nil {
			t.Errorf("Scale of %s %s/%s succeeded", tt.kind, tt.ns, tt.name)
			continue
		}
		if !strings.Contains(err.Error(), tt.kind+" "+tt.ns+"/"+tt.name) || !strings.Contains(err.Error(), "not found") {
			t.Errorf("error %q does not say %s %s/%s is not found", err, tt.kind, tt.ns, tt.name)
		}
		if !apierrors.IsNotFound(err) {
			t.Errorf("error %q: apierrors.IsNotFound is false", err)
		}
	}
}

func TestScaleBadArguments(t *testing.T) {
	_, s := newFake(t, deployment("prod", "api", 1))
	for _, tt := range []struct {
		kind, ns, name string
		replicas       int32
		want           string
	}{
		{"cronjob", "prod", "api", 1, `unknown workload kind "cronjob": want deployment (deploy) or statefulset (sts)`},
		{"", "prod", "api", 1, `unknown workload kind ""`},
		{"deployment", "", "api", 1, "namespace is required"},
		{"deployment", "prod", "", 1, "name is required"},
		{"deployment", "prod", "api", -1, "replicas must not be negative, got -1"},
	} {
		_, err := s.Scale(t.Context(), tt.kind, tt.ns, tt.name, tt.replicas, false)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "kube: ") {
			t.Errorf("Scale(%q, %q, %q, %d) = %v, want an error with %q", tt.kind, tt.ns, tt.name, tt.replicas, err, tt.want)
		}
	}
}

// TestScaleConflict: an update that loses a race is retried on a fresh
// read.
func TestScaleConflict(t *testing.T) {
	cs, s := newFake(t, deployment("prod", "api", 1))
	var once sync.Once
	cs.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		conflict := false
		once.Do(func() { conflict = true })
		if !conflict {
			return false, nil, nil
		}
		return true, nil, apierrors.NewConflict(deploymentsGVR.GroupResource(), "api", errors.New("the object has been modified"))
	})
	res, err := s.Scale(t.Context(), "deployment", "prod", "api", 4, false)
	if err != nil {
		t.Fatalf("Scale: %v", err)
	}
	if res != (ScaleResult{From: 1, To: 4}) || specReplicas(t, cs, "deployment", "prod", "api") != 4 {
		t.Errorf("Scale = %+v, spec.replicas %d; want From 1 To 4", res, specReplicas(t, cs, "deployment", "prod", "api"))
	}
}

// TestFromKubeconfig talks to a stand-in API server through a kubeconfig
// file: the real REST client's scale subresource requests, and errors
// named after the context.
func TestFromKubeconfig(t *testing.T) {
	var mu sync.Mutex
	replicas := int32(1)
	var requests []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		requests = append(requests, r.Method+" "+r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/apis/apps/v1/namespaces/prod/deployments/api/scale" && r.Method == http.MethodGet:
		case r.URL.Path == "/apis/apps/v1/namespaces/prod/deployments/api/scale" && r.Method == http.MethodPut:
			// client-go sends built-in types as protobuf.
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
			sc, ok := obj.(*autoscalingv1.Scale)
			if err != nil || !ok {
				http.Error(w, fmt.Sprintf("not a Scale (%T): %v", obj, err), http.StatusBadRequest)
				return
			}
			if sc.ResourceVersion != "7" {
				http.Error(w, "resourceVersion "+sc.ResourceVersion, http.StatusConflict)
				return
			}
			replicas = sc.Spec.Replicas
		default:
			w.WriteHeader(http.StatusNotFound)
			st := apierrors.NewNotFound(deploymentsGVR.GroupResource(), "other").ErrStatus
			st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
			json.NewEncoder(w).Encode(st)
			return
		}
		json.NewEncoder(w).Encode(&autoscalingv1.Scale{
			TypeMeta:   metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "api", ResourceVersion: "7"},
			Spec:       autoscalingv1.ScaleSpec{Replicas: replicas},
		})
	}))
	defer srv.Close()

	kubeconfig := filepath.Join(t.TempDir(), "config")
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: eu
  cluster: {server: %q}
users:
- name: ops
  user: {token: not-a-real-token}
contexts:
- name: eu-west
  context: {cluster: eu, user: ops}
current-context: eu-west
`, srv.URL)
	if err := os.WriteFile(kubeconfig, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}

	for i, context := range []string{"eu-west", ""} { // named, then the current one
		s, err := FromKubeconfig(kubeconfig, context)
		if err != nil {
			t.Fatalf("FromKubeconfig(%q): %v", context, err)
		}
		res, err := s.Scale(t.Context(), "deployment", "prod", "api", 3, false)
		if err != nil {
			t.Fatalf("Scale through context %q: %v", context, err)
		}
		want := ScaleResult{From: 1, To: 3}
		if i == 1 {
			want = ScaleResult{Already: true, From: 3, To: 3}
		}
		if res != want {
			t.Errorf("Scale through context %q = %+v, want %+v", context, res, want)
		}
		_, err = s.Scale(t.Context(), "deployment", "prod", "missing", 1, false)
		if err == nil || !strings.HasPrefix(err.Error(), `kube context "eu-west": scale deployment prod/missing: get scale:`) || !apierrors.IsNotFound(err) {
			t.Errorf("Scale of a missing deployment through context %q: %v", context, err)
		}
	}
	mu.Lock()
	got := strings.Join(requests, "\n")
	mu.Unlock()
	for _, want := range []string{
		"GET /apis/apps/v1/namespaces/prod/deployments/api/scale",
		"PUT /apis/apps/v1/namespaces/prod/deployments/api/scale",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the API server never got %q; it got:\n%s", want, got)
		}
	}

	if _, err := FromKubeconfig(kubeconfig, "us-east"); err == nil || !strings.Contains(err.Error(), `"us-east"`) {
		t.Errorf("FromKubeconfig with an unknown context: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := FromKubeconfig(missing, "eu-west"); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("FromKubeconfig with a missing file: %v", err)
	}
}
