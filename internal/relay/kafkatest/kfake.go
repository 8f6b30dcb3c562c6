package kafkatest

import (
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// FailProduce makes a kfake cluster answer every produce request with the
// Kafka error code, on every partition, until heal is called; then the
// cluster handles produce requests itself again.
//
// kfake's control functions see the request as the client sent it, so this
// works whatever produce version the client speaks (kafka-go: v8).
func FailProduce(cluster *kfake.Cluster, code int16) (heal func()) {
	var healed atomic.Bool
	cluster.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if healed.Load() {
			cluster.DropControl()
			return nil, nil, false // not handled: the cluster answers
		}
		cluster.KeepControl() // a handled control is dropped otherwise
		preq := req.(*kmsg.ProduceRequest)
		resp := preq.ResponseKind().(*kmsg.ProduceResponse) // same version
		for _, rt := range preq.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return func() { healed.Store(true) }
}
