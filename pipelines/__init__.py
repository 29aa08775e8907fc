"""Model pipelines. Each one is a :class:`node.pipeline.base.Pipeline` registered through the
``ai_node.pipelines`` entry-point group, the built-in ones included."""
