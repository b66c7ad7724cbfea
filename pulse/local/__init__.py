"""A real Apache Kafka (KRaft) broker and Apicurio Registry, provisioned from Maven Central."""
