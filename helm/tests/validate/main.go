// Command validate reads Kubernetes manifests (a multi-document YAML stream, e.g. the output
// of `helm template`) on stdin and decodes each document strictly into its typed API object
// (k8s.io/api): an unknown field, a wrong type or an unparsable quantity is an error. KEDA's
// ScaledObject, a CRD without types here, is checked against the fields the chart uses.
// Prints one line per object; exits 1 on the first invalid one. With -configmaps DIR, the
// data of every ConfigMap is also written there (DIR/<name>/<key>), for checks of its content.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// scaledObject is the part of keda.sh/v1alpha1 ScaledObject the chart renders.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		// KEDA v2's ScaleTarget (apiVersion and kind default to apps/v1 Deployment).
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

func object(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "batch/v1/Job":
		return &batchv1.Job{}, nil
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "keda.sh/v1alpha1/ScaledObject":
		return &scaledObject{}, nil
	}
	return nil, fmt.Errorf("unknown apiVersion/kind %s %s", apiVersion, kind)
}

// documents splits a YAML stream on "---" lines.
func documents(r io.Reader) ([][]byte, error) {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	flush := func() {
		if strings.TrimSpace(cur.String()) != "" {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "---") {
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs, sc.Err()
}

func check(doc []byte, configmaps string) (string, error) {
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return "", err
	}
	if meta.APIVersion == "" && meta.Kind == "" {
		// Only comments.
		return "", nil
	}
	obj, err := object(meta.APIVersion, meta.Kind)
	if err != nil {
		return "", err
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return "", fmt.Errorf("%s: %w", meta.Kind, err)
	}
	if cm, ok := obj.(*corev1.ConfigMap); ok && configmaps != "" {
		dir := filepath.Join(configmaps, cm.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		for k, v := range cm.Data {
			if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
				return "", err
			}
		}
	}
	var name struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &name); err != nil || name.Metadata.Name == "" {
		return "", fmt.Errorf("%s without metadata.name", meta.Kind)
	}
	return meta.Kind + " " + name.Metadata.Name, nil
}

func main() {
	configmaps := flag.String("configmaps", "", "write each ConfigMap's data under this folder")
	flag.Parse()
	docs, err := documents(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading manifests:", err)
		os.Exit(1)
	}
	n := 0
	for i, d := range docs {
		what, err := check(d, *configmaps)
		if err != nil {
			fmt.Fprintf(os.Stderr, "document %d: %v\n", i+1, err)
			os.Exit(1)
		}
		if what != "" {
			fmt.Println("valid:", what)
			n++
		}
	}
	if n == 0 {
		fmt.Fprintln(os.Stderr, "no manifests on stdin")
		os.Exit(1)
	}
}
