"""Model pipelines. Each one is a :class:`pipelines.base.Pipeline` registered through the
``ai_node.pipelines`` entry-point group, the built-in ones included."""
